"""The ntkcheck command: summary and claims report rendering."""

from __future__ import annotations

import json

import pytest

from ntkcheck import claims
from ntkcheck.cli import build_parser, main
from ntkcheck.verify import plot_series, write_report


def test_summary_quick_writes_report_and_agrees(tmp_path, capsys):
    assert main(["summary", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| architecture | N |" in text and text.count("ntkcheck.MLP(") == 2
    assert "methods agree to" in capsys.readouterr().out


def test_unknown_subcommand_and_bad_dtype_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frobnicate"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "--dtype", "float16"])


def test_report_lists_every_claim_with_verdict(tmp_path):
    records = {
        "asi": {"examples": 30, "failures": 0, "worst_error": 1e-16, "worst_tolerance": 1e-10, "worst_ratio": 1e-6},
        "doubling_trick": {"examples": 5, "failures": 2, "worst_error": 1e-3, "worst_tolerance": 1e-10,
                           "worst_ratio": 1e7},
        "_series": {"width: relu": {"x": [64, 128], "y": [0.2, 0.14], "slope": -0.5, "intercept": 0.5}},
    }
    fig = plot_series(records["_series"], tmp_path / "w.png")
    report = write_report(records, tmp_path / "claims.md", profile="ci", device="cpu", dtype="float64",
                          seconds=1.0, figure=fig)
    text = report.read_text()
    assert fig is not None and fig.stat().st_size > 1000
    for claim in claims.CLAIMS.values():
        assert claim.reference in text
    assert "| 30 | 1.00e-16 | 1.0e-10 | holds |" in text
    assert "FAILED (2 of 5)" in text
    assert text.count("NOT RUN") == len(claims.CLAIMS) - 2
    assert "-0.500" in text and "![width convergence](w.png)" in text


def test_check_close_records_and_fails_with_reproduction(tmp_path):
    import torch

    claims.RECORDS.clear()
    claims.check_close(torch.ones(3), torch.ones(3), tol=1e-12, claim="asi", what="same", context="x = 1")
    with pytest.raises(AssertionError, match=r"seed 000, Thm 4 = Thm 9 violated(.|\n)*reproduce with:(.|\n)*x = 2"):
        claims.check_close(torch.ones(3) * 2, torch.ones(3), tol=1e-12, claim="asi", what="off", context="x = 2")
    with pytest.raises(KeyError, match="claim must be one of"):
        claims.check_at_most(0.0, 1.0, claim="nonsense", what="", context="")
    claims.dump_records(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["asi"]["examples"] == 2 and saved["asi"]["failures"] == 1
    claims.RECORDS.clear()
