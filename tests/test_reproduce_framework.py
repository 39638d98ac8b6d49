"""The reproduction framework: verdicts, reports, the registry and the command line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from ntkcheck.cli import build_parser, main
from ntkcheck.experiments import EXPERIMENTS, Reproduction, Verdict, experiment, reproduce, write_report
from ntkcheck.experiments._result import WidthTrend, mean_spread, seed_list, verdict
from ntkcheck.experiments._scale import faithful_v_std, output_rms, predicted_scale_ratio
from ntkcheck.models import MLP
from ntkcheck.testing.verify import write_report as write_claims_report


def _result(measured: float = 0.1, skipped: str | None = None) -> Reproduction:
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1])
    return Reproduction(
        name="demo",
        title="Demo experiment",
        reference="seed 000, Fig 1",
        mode="quick",
        device="cpu",
        settings={"width": 64, "lr": 0.5},
        verdicts=[Verdict("L2 and L4 outputs overlap", measured, 0.05, "<=", "O(1/sqrt(m)) at m = 500.")],
        tables={"Outputs": [{"loss": "L2", "max |diff|": 0.01}, {"loss": "L4", "max |diff|": 0.02}]},
        figures={"outputs": fig},
        notes=["a note"],
        seconds=1.5,
        skipped=skipped,
    )


@pytest.mark.parametrize(
    "measured, comparison, holds",
    [
        (0.1, "<=", False),
        (0.01, "<=", True),
        (0.05, "<=", True),
        (0.1, ">=", True),
        (0.01, ">=", False),
        (math.nan, "<=", False),
        (math.nan, ">=", False),
    ],
)
def test_verdict_compares_measured_with_threshold(measured, comparison, holds):
    assert Verdict("c", measured, 0.05, comparison, "why").holds is holds


def test_reproduction_holds_only_when_every_verdict_holds_and_it_ran():
    assert not _result(0.1).holds
    assert _result(0.01).holds
    assert not _result(0.01, skipped="mlxtend is not installed: pip install mlxtend").holds


def test_write_report_writes_markdown_with_verdicts_tables_and_figures(tmp_path: Path):
    path = write_report(_result(0.1), out=tmp_path)
    assert path == tmp_path / "reproduce-demo.md"
    text = path.read_text()
    assert "# Demo experiment" in text and "seed 000, Fig 1" in text
    assert "| L2 and L4 outputs overlap | 0.1 | <= 0.05 | **did not hold** | O(1/sqrt(m)) at m = 500. |" in text
    assert "| L4 | 0.02 |" in text and "a note" in text
    assert "![outputs](reproduce-demo-outputs.png)" in text
    assert (tmp_path / "reproduce-demo-outputs.png").read_bytes()[:4] == b"\x89PNG"


def test_skipped_report_says_why(tmp_path: Path):
    text = write_report(_result(skipped="mlxtend is not installed: pip install mlxtend"), out=tmp_path).read_text()
    assert "**Skipped:** mlxtend is not installed: pip install mlxtend" in text
    assert "## Verdicts" not in text


def test_claims_report_links_reproductions(tmp_path: Path):
    done = [(_result(0.01), tmp_path / "reproduce-demo.md")]
    text = write_claims_report(
        {}, out=tmp_path, profile="ci", device="cpu", dtype="float64", seconds=1.0, reproductions=done
    ).read_text()
    assert "## Reproductions (quick)" in text
    row = "| Demo experiment | seed 000, Fig 1 | L2 and L4 outputs overlap: holds | 2 | "
    assert row + "[reproduce-demo.md](reproduce-demo.md) |" in text


def test_registry_names_the_seven_experiments_and_each_module_has_config_and_run():
    assert sorted(EXPERIMENTS) == sorted(
        ["loss-invariance", "asi-1d", "boston", "mnist", "sigma-scaling", "init-rates", "frequency"]
    )
    for name in EXPERIMENTS:
        module = experiment(name)
        quick, full = module.Config.quick(seed=3), module.Config.full(seed=3)
        assert quick.seed == 3 and full.seed == 3 and quick != full, name
        assert callable(module.run), name


def test_unknown_experiment_and_mode_are_refused():
    with pytest.raises(ValueError, match="name must be one of"):
        experiment("fig-9")
    with pytest.raises(ValueError, match="mode must be 'quick' or 'full'"):
        reproduce("asi-1d", "medium")  # type: ignore[arg-type]
    assert main(["reproduce", "fig-9", "--device", "cpu"]) == 2  # "unknown experiment 'fig-9'" on stderr


def test_reproduce_command_line():
    args = build_parser().parse_args(["reproduce", "asi-1d", "boston", "--full", "--seed", "4", "--device", "cpu"])
    assert args.names == ["asi-1d", "boston"] and args.full and args.seed == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--quick", "--full"])
    assert build_parser().parse_args(["verify", "--reproduce"]).reproduce


# ------------------------------------------------------------------------------------------------
# verdicts over seeds, width trends, statuses (synthetic numbers)


def test_verdict_over_seeds_is_on_the_mean_and_reports_the_spread():
    v = verdict("gap", [0.1, 0.2, 0.3], 0.25, "<=", "why")
    assert v.measured == pytest.approx(0.2) and v.spread == pytest.approx(0.1)
    assert v.holds and v.status == "holds" and v.passes
    assert "0.2 ± 0.1 (3 seeds: 0.1, 0.2, 0.3)" in v.line()
    # one seed far off moves the mean past the threshold: the verdict does not hold
    bad = verdict("gap", [0.1, 0.2, 0.9], 0.25, "<=", "why")
    assert not bad.holds and bad.status == "did not hold" and not bad.passes and "DID NOT HOLD" in bad.line()


def test_a_failed_seed_is_not_averaged_away():
    v = verdict("gap", [0.1, math.nan, 0.1], 1.0, "<=", "why")
    assert math.isnan(v.measured) and not v.holds and v.status == "did not hold"
    assert mean_spread([2.0]) == (2.0, 0.0)


def test_information_is_reported_but_never_fails_the_reproduction():
    info = verdict("paper's 90%", [0.85, 0.86, 0.87], 0.9, ">=", "the paper's number", information="other data set")
    assert not info.holds and info.status == "information" and info.passes
    result = Reproduction("demo", "Demo", "seed 000", "quick", "cpu", {}, verdicts=[info])
    assert result.holds
    assert "information" in info.line() and "DID NOT HOLD" not in info.line()


def _trend(values_at: dict[int, list[float]], paper: int) -> WidthTrend:
    widths = sorted(values_at)
    return WidthTrend(tuple(widths), tuple(tuple(values_at[w]) for w in widths), paper)


def test_width_trend_recovers_a_power_law_and_extrapolates_it():
    # q = 3 w^-1/2 exactly, three seeds per width with multiplicative noise that averages out in the log fit
    noise = (0.9, 1.0, 1 / 0.9)
    trend = _trend({w: [3 * w**-0.5 * f for f in noise] for w in (256, 512, 1024)}, 5000)
    b, se, _ = trend.fit()
    assert b == pytest.approx(-0.5, abs=1e-12) and 0 < se < 0.1  # the noise enters the standard error only
    assert trend.at(5000) == pytest.approx(3 * 5000**-0.5, rel=1e-9)  # the noise factors' log-mean is 0
    rows = trend.rows()
    assert [r["width"] for r in rows[:3]] == [256, 512, 1024] and "5000" in str(rows[-1]["width"])


@pytest.mark.parametrize(
    "values, status",
    [
        # misses at the run's width (512), falls like w^-1/2 and reaches 0.1 before 5000: approaching
        ({256: [0.28] * 3, 512: [0.2] * 3, 1024: [0.14] * 3}, "width effect: approaching"),
        # falls, but too slowly to reach 0.1 by the paper's width: did not hold
        ({256: [0.3] * 3, 512: [0.29] * 3, 1024: [0.28] * 3}, "did not hold"),
        # grows with width: did not hold
        ({256: [0.15] * 3, 512: [0.2] * 3, 1024: [0.3] * 3}, "did not hold"),
    ],
)
def test_a_miss_counts_as_a_width_effect_only_when_the_fit_reaches_the_threshold_at_the_papers_width(values, status):
    v = verdict("eq (6) gap", values[512], 0.1, "<=", "plot tolerance", trend=_trend(values, 5000))
    assert v.status == status and v.passes is (status != "did not hold")
    assert "at the paper's width 5000" in v.line()


def test_width_effect_in_the_report_shows_every_width_and_the_fit(tmp_path: Path):
    trend = _trend({256: [0.28, 0.3, 0.26], 512: [0.2, 0.21, 0.19], 1024: [0.14, 0.15, 0.13]}, 5000)
    result = Reproduction(
        "demo",
        "Demo",
        "seed 000",
        "quick",
        "cpu",
        {"width": 512},
        verdicts=[verdict("eq (6) gap", [0.2, 0.21, 0.19], 0.1, "<=", "plot tolerance", trend=trend)],
    )
    text = write_report(result, out=tmp_path).read_text()
    assert result.holds
    assert "*width effect: approaching*" in text and "### Width sweep: eq (6) gap" in text
    assert "| 1024 | 0.14 |" in text and "5000 (paper, fitted)" in text and "fit q ∝ w^(" in text


def test_seed_list_and_its_bad_counts():
    assert seed_list(7, 3) == [7, 8, 9]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="seeds"):
            seed_list(0, bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# the width-faithful init scale (seed 000 §7)


@pytest.mark.parametrize("hidden", [1, 2])
def test_h_ini_scales_like_v_to_the_L_plus_1_over_sqrt_width(hidden):
    """Mean square of h_ini over 200 draws at two (width, v_std) settings, against v^(2(L+1)) / m.

    v_std >= 4 keeps the biases' lower-order terms small; 200 draws keep the sampling error near 10%.
    """
    x = torch.linspace(-1, 1, 16, dtype=torch.float64).unsqueeze(1)

    def mean_square(width: int, v: float) -> float:
        return (
            sum(
                output_rms(
                    MLP(
                        1,
                        [width] * hidden,
                        1,
                        parametrization="standard",
                        init="glorot",
                        weight_std=v,
                        generator=torch.Generator().manual_seed(s),
                        dtype=torch.float64,
                    ),
                    x,
                )
                ** 2
                for s in range(200)
            )
            / 200
        )

    paper = mean_square(256, 8.0)
    ratio = mean_square(64, 4.0) / paper
    assert ratio == pytest.approx(predicted_scale_ratio(4.0, 64, 8.0, 256, hidden) ** 2, rel=0.2)
    # the width-faithful v_std at width 64 gives h_ini the scale it has at width 256, v_std 8
    v = faithful_v_std(8.0, 64, 256, hidden)
    assert v == pytest.approx(8.0 * (64 / 256) ** (1 / (2 * (hidden + 1))))
    assert mean_square(64, v) / paper == pytest.approx(1.0, rel=0.2)
    with pytest.raises(ValueError, match="hidden_layers"):
        faithful_v_std(4.0, 64, 256, 0)


# ------------------------------------------------------------------------------------------------
# all-or-nothing report writing


def test_a_kill_while_writing_keeps_the_previous_report_and_figures(tmp_path: Path, monkeypatch):
    """A KeyboardInterrupt in the middle of the second figure's savefig: nothing of the new report lands."""
    first = _result(0.01)
    fig2 = Figure()
    ax = fig2.subplots()
    ax.plot([0, 1], [1, 0])
    first.figures["second"] = fig2
    write_report(first, out=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"reproduce-demo.md", "reproduce-demo-outputs.png", "reproduce-demo-second.png"}

    new = _result(0.1)  # a different verdict, so the Markdown would differ
    fig3 = Figure()
    ax = fig3.subplots()
    ax.plot([0, 1], [0.5, 0.5])
    new.figures["second"] = fig3
    real = type(fig3).savefig

    def killed(self, fname, *args, **kwargs):
        if self is fig3:
            Path(fname).write_bytes(b"\x89PNG partial")  # half a file on disk, then the kill
            raise KeyboardInterrupt
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(type(fig3), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(new, out=tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes: no temporaries left, nothing replaced
