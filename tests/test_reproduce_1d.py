"""The 1-d reproductions of seed 000 (Fig 1: loss invariance; Fig 2: eq (6) and ASI) at toy sizes.

Each experiment runs once per module at a width of 64 (seconds on one CPU core); the tests
check what the run measured, not only that it ran.  Tolerances are for that width: the
kernel regime's finite-width error is of order 1/sqrt(64) = 0.125.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

import ntkcheck as nk
from ntkcheck.experiments import Reproduction, asi_1d, experiment, mode_of, write_report
from ntkcheck.experiments import loss_invariance as li
from ntkcheck.experiments._asi_1d_report import MUCH_FASTER
from ntkcheck.experiments._common import cpu_threads
from ntkcheck.experiments._seed000 import seed000_mlp, sin_data

LI_TINY = li.Config(
    width=64,
    v_std=5.0,
    n_test=50,
    min_gap=0.6,
    chunk=25,
    max_steps=1500,
    fit_tol=1e-2,
    seed=3,
    seeds=2,
    progress=False,
)
ASI_TINY = asi_1d.Config(
    width=64,
    v_std=3.0,
    sweep_widths=(128,),
    n_test=50,
    max_steps=900,
    stop_loss=2e-3,
    speed_loss=2e-2,
    seeds=2,
    progress=False,
)
FINITE_WIDTH = 1 / math.sqrt(64)


def _close(result: Reproduction) -> None:
    for fig in result.figures.values():
        plt.close(fig)


@pytest.fixture(scope="module")
def li_result():
    result = li.run(LI_TINY)
    yield result
    _close(result)


@pytest.fixture(scope="module")
def asi_result():
    result = asi_1d.run(ASI_TINY)
    yield result
    _close(result)


def _verdict(result: Reproduction, start: str):
    found = [v for v in result.verdicts if v.claim.startswith(start)]
    claims = [v.claim for v in result.verdicts]
    assert len(found) == 1, f"{result.name}: no single verdict starting {start!r} in {claims}"
    return found[0]


def _row(result: Reproduction, table: str, key: str, value: str, seed: int = 0) -> dict:
    rows = [r for r in result.tables[table] if r[key] == value and r.get("seed", seed) == seed]
    assert len(rows) == 1, f"{result.name}: no single row {key}={value!r}, seed {seed} in table {table!r}"
    return rows[0]


# ------------------------------------------------------------------------------------------------
# configurations and helpers


def test_configs_are_frozen_registered_and_full_mode_has_the_papers_sizes():
    assert experiment("loss-invariance") is li and experiment("asi-1d") is asi_1d
    full_li, full_asi = li.Config.full(), asi_1d.Config.full()
    assert (full_li.width, full_li.v_std, full_li.n_train, full_li.n_test) == (500, 5.0, 4, 500)
    assert full_li.powers == (2.0, 4.0)
    assert (full_asi.width, full_asi.v_std, full_asi.n_train, full_asi.n_test) == (5000, 10.0, 10, 500)
    assert full_li.seeds >= 3 and full_asi.seeds >= 3 and li.Config.quick().seeds >= 3
    # quick asi-1d: narrower, at the v_std that gives h_ini the paper's scale (v^3 / sqrt(m))
    quick_asi = asi_1d.Config.quick()
    assert quick_asi.width < 5000 and quick_asi.v_std == pytest.approx(
        10 * (quick_asi.width / 5000) ** (1 / 6), abs=1e-3
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        full_li.width = 3  # type: ignore[misc]
    assert mode_of(dataclasses.replace(full_li, progress=False)) == "full"
    assert mode_of(asi_1d.Config.quick()) == "quick" and mode_of(full_asi) == "full"


def test_sin_data_is_seeded_sorted_spaced_and_on_sin4x():
    x, y = sin_data(10, torch.Generator().manual_seed(5), min_gap=0.25)
    x2, _ = sin_data(10, torch.Generator().manual_seed(5), min_gap=0.25)
    assert torch.equal(x, x2) and x.shape == (10, 1) and y.shape == (10,)
    gaps = x[1:, 0] - x[:-1, 0]
    assert bool((gaps >= 0.25 * 2 / 10).all()), gaps
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.allclose(y, torch.sin(4 * x[:, 0]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="min_gap"):
        sin_data(4, torch.Generator(), min_gap=1.5)


def test_cpu_threads_restores_the_setting():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cpu_threads"):
        with cpu_threads(0):
            pass


def test_bad_configs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="dtype"):
        li.run(dataclasses.replace(LI_TINY, dtype="float16"))
    with pytest.raises(ValueError, match="powers"):
        li.run(dataclasses.replace(LI_TINY, powers=(2.0,)))
    with pytest.raises(ValueError, match="stop_loss"):
        asi_1d.run(dataclasses.replace(ASI_TINY, stop_loss=0.1, speed_loss=0.01))


def test_loss_sharpness_is_the_top_eigenvalue_of_the_linearized_loss_hessian():
    gen = torch.Generator().manual_seed(0)
    model = seed000_mlp(1, [16, 16], 1, 2.0, gen, device="cpu")
    x, y = sin_data(4, gen)
    k = nk.ntk(model, x)
    # MSE: H = (2/n) I, so lambda_max = (2/n) lambda_max(K)
    assert math.isclose(
        li.loss_sharpness(model, x, y, nk.MSE), 2 / 4 * float(torch.linalg.eigvalsh(k)[-1]), rel_tol=1e-10
    )
    # L4: H = diag(12/n r^2); lambda_max(D K D) with D = sqrt(H)
    with torch.no_grad():
        r = model(x).reshape(-1) - y
    d = torch.diag((12 / 4 * r**2).sqrt())
    expected = float(torch.linalg.eigvalsh(d @ k @ d)[-1])
    assert math.isclose(li.loss_sharpness(model, x, y, nk.LpLoss(4)), expected, rel_tol=1e-8)


# ------------------------------------------------------------------------------------------------
# loss invariance (seed 000, Thm 6, Fig 1)


def test_loss_invariance_runs_trains_both_losses_and_measures_a_small_gap(li_result):
    r = li_result
    assert r.name == "loss-invariance" and r.mode == "custom" and r.seconds > 0
    assert all(math.isfinite(v.measured) and math.isfinite(v.threshold) for v in r.verdicts)
    table = "Per-loss training and distance to the kernel prediction"
    for seed in (3, 4):
        for loss in ("L2", "L4"):
            row = _row(r, table, "loss", loss, seed)
            assert row["max train residual / range(Y)"] <= LI_TINY.fit_tol, row
            assert row["GD steps"] > 0, row
            # the trained network is near its linearization's limit, eq (5), relative to how far it moved
            assert row["‖h - eq (5)‖ / ‖eq (5) - h_ini‖"] <= FINITE_WIDTH, row
        # L4 flattens as the residual shrinks, so its stability limit, hence the step, grows
        l4 = _row(r, table, "loss", "L4", seed)
        assert l4["last lr"] > 10 * l4["first lr"], l4
    gap = _verdict(r, "L2- and L4-trained outputs overlap")
    assert gap.threshold == pytest.approx(FINITE_WIDTH)
    assert len(gap.values) == 2 and gap.measured == pytest.approx(sum(gap.values) / 2)
    assert 0 < gap.measured <= 0.1, gap.line()
    for row, value in zip(r.tables["Per seed"], gap.values):
        # the gap is far below what the initial output would leave if training ignored the loss
        assert value * row["output range"] < 0.1 * row["max abs(h_ini) on test points"]
    assert _verdict(r, "both runs are well trained").holds
    scale = r.tables["Initial output scale (seed 000 §7 init)"]
    assert scale[0]["RMS of h_ini (mean over seeds)"] > 0 and "paper: width 500" in scale[1]["network"]
    assert set(r.figures) == {"outputs", "loss"}


def test_loss_invariance_l4_alone_is_refused_a_comparison():
    with pytest.raises(ValueError, match="at least two"):
        li.run(dataclasses.replace(LI_TINY, powers=(4.0,)))


# ------------------------------------------------------------------------------------------------
# ASI and eq (6) (seed 000, Thm 2, Thm 4, Fig 2)


def test_asi_starts_at_zero_with_the_original_kernel(asi_result):
    r = asi_result
    v = _verdict(r, "ASI output at init is 0")
    assert v.measured == 0.0 and v.values == (0.0, 0.0) and v.holds
    for kernels in r.tables["Kernels"]:
        assert kernels["‖K_ASI - K‖ / ‖K‖"] <= 1e-12
    for seed in (0, 1):
        rows = {
            row["network"]: row for row in r.tables["Training (one step size for all networks)"] if row["seed"] == seed
        }
        # zero-output starts (ASI, doubling) share the loss mean(y^2); the original and RND start elsewhere
        assert rows["ASI"]["initial loss"] == pytest.approx(rows["doubling"]["initial loss"], rel=1e-4)
        assert rows["original"]["initial loss"] > rows["ASI"]["initial loss"]
        assert rows["RND"]["initial loss"] > rows["ASI"]["initial loss"]
        assert rows["ASI"]["lr / own stability limit"] == pytest.approx(rows["original"]["lr / own stability limit"])
        assert max(row["lr / own stability limit"] for row in rows.values()) == pytest.approx(ASI_TINY.lr_fraction)
        # the linearized ASI network (the original kernel, zero start) reaches the speed loss within the budget
        assert math.isfinite(rows["ASI"]["same, linearized (initial NTK)"])


def test_eq6_predicts_the_trained_original_network(asi_result):
    r = asi_result
    assert all(math.isfinite(v.measured) for v in r.verdicts)
    assert _verdict(r, "the original network reached the stop loss").holds
    lin = _verdict(r, "the trained original network is the limit of its linearization")
    assert lin.holds and lin.measured > 0, lin.line()
    rows = r.tables["Eq (6) against the trained networks (test points)"]
    assert tuple(row["‖h_orig - eq6‖ / ‖eq6 - h_ini‖"] for row in rows) == lin.values
    for eq6 in rows:
        # the trained ASI network is the zero-init kernel solution h_k(.; 0, X, Y)
        assert eq6["‖h_ASI - h_k(0,X,Y)‖ / ‖h_k(0,X,Y)‖"] <= 2 * FINITE_WIDTH
    # original - ASI against the prior h_ini - h_k(.; 0, X, h_ini(X)) is reported per seed; at width 64 both
    # networks' finite-width errors are of the prior's size, so the claim is judged by the verdict and its width
    # sweep below, not row by row
    # the plot-level claim carries its width sweep: the run's width and the sweep's, both seeds each
    plot = _verdict(r, "RHS of eq (6) from the initial NTK predicts")
    assert plot.trend is not None and plot.trend.widths == (64, 128) and plot.trend.paper_width == 5000
    assert plot.trend.values[0] == plot.values and all(len(v) == 2 for v in plot.trend.values)
    assert set(r.figures) == {"a-outputs", "b-init-prior", "c-loss", "eq6-gap"}


def test_asi_reaches_the_loss_level_much_before_the_original(asi_result):
    v = _verdict(asi_result, "ASI trains much faster than original")
    assert v.threshold == MUCH_FASTER and math.isfinite(v.measured) and v.status != "information"
    doubling = _verdict(asi_result, "ASI trains much faster than doubling")
    assert doubling.status == "information" and "linearized networks" in doubling.information


def test_asi_1d_refuses_a_sweep_width_equal_to_the_run_width():
    with pytest.raises(ValueError, match="sweep_widths"):
        asi_1d.run(dataclasses.replace(ASI_TINY, sweep_widths=(64,)))


# ------------------------------------------------------------------------------------------------
# reports


def test_write_report_names_every_figure_and_verdict(tmp_path: Path, li_result, asi_result):
    for result in (li_result, asi_result):
        path = write_report(result, out=tmp_path)
        text = path.read_text()
        assert path.name == f"reproduce-{result.name}.md"
        for key in result.figures:
            fname = f"reproduce-{result.name}-{key}.png"
            assert f"![{key}]({fname})" in text
            assert (tmp_path / fname).read_bytes()[:4] == b"\x89PNG"
        for v in result.verdicts:
            assert v.claim in text
        assert "## Verdicts" in text and "## Notes" in text
