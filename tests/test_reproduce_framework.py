"""The reproduction framework: verdicts, reports, the registry and the command line."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from ntkcheck.cli import build_parser, main
from ntkcheck.reproduce import EXPERIMENTS, Reproduction, Verdict, experiment, reproduce, write_report
from ntkcheck.verify import write_report as write_claims_report


def _result(measured: float = 0.1, skipped: str | None = None) -> Reproduction:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return Reproduction(
        name="demo", title="Demo experiment", reference="seed 000, Fig 1", mode="quick", device="cpu",
        settings={"width": 64, "lr": 0.5},
        verdicts=[Verdict("L2 and L4 outputs overlap", measured, 0.05, "<=", "O(1/sqrt(m)) at m = 500.")],
        tables={"Outputs": [{"loss": "L2", "max |diff|": 0.01}, {"loss": "L4", "max |diff|": 0.02}]},
        figures={"outputs": fig}, notes=["a note"], seconds=1.5, skipped=skipped,
    )


@pytest.mark.parametrize("measured, comparison, holds", [
    (0.1, "<=", False), (0.01, "<=", True), (0.05, "<=", True), (0.1, ">=", True), (0.01, ">=", False),
    (math.nan, "<=", False), (math.nan, ">=", False),
])
def test_verdict_compares_measured_with_threshold(measured, comparison, holds):
    assert Verdict("c", measured, 0.05, comparison, "why").holds is holds


def test_reproduction_holds_only_when_every_verdict_holds_and_it_ran():
    assert not _result(0.1).holds
    assert _result(0.01).holds
    assert not _result(0.01, skipped="mlxtend is not installed: pip install mlxtend").holds


def test_write_report_writes_markdown_with_verdicts_tables_and_figures(tmp_path: Path):
    path = write_report(_result(0.1), tmp_path)
    assert path == tmp_path / "reproduce-demo.md"
    text = path.read_text()
    assert "# Demo experiment" in text and "seed 000, Fig 1" in text
    assert "| L2 and L4 outputs overlap | 0.1 | <= 0.05 | **did not hold** | O(1/sqrt(m)) at m = 500. |" in text
    assert "| L4 | 0.02 |" in text and "a note" in text
    assert "![outputs](reproduce-demo-outputs.png)" in text
    assert (tmp_path / "reproduce-demo-outputs.png").read_bytes()[:4] == b"\x89PNG"


def test_skipped_report_says_why(tmp_path: Path):
    text = write_report(_result(skipped="mlxtend is not installed: pip install mlxtend"), tmp_path).read_text()
    assert "**Skipped:** mlxtend is not installed: pip install mlxtend" in text
    assert "## Verdicts" not in text


def test_claims_report_links_reproductions(tmp_path: Path):
    done = [(_result(0.01), tmp_path / "reproduce-demo.md")]
    text = write_claims_report({}, tmp_path / "claims.md", profile="ci", device="cpu", dtype="float64", seconds=1.0,
                               figure=None, reproductions=done).read_text()
    assert "## Reproductions (quick)" in text
    assert "| Demo experiment | seed 000, Fig 1 | L2 and L4 outputs overlap: holds | 2 | [reproduce-demo.md](reproduce-demo.md) |" in text


def test_registry_names_the_seven_experiments_and_each_module_has_config_and_run():
    assert sorted(EXPERIMENTS) == sorted(["loss-invariance", "asi-1d", "boston", "mnist", "sigma-scaling",
                                          "init-rates", "frequency"])
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
