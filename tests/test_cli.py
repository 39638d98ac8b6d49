"""The ntkcheck command: summary and claims report rendering."""

from __future__ import annotations

import pytest

from ntkcheck.testing import claims
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


def _record(checks: int, failures: int, error: float, tol: float, what: str) -> dict:
    return {"claim": "x", "checks": checks, "failures": failures, "worst_ratio": error / tol, "worst_error": error,
            "worst_tolerance": tol, "worst_what": what, "tolerance_name": "kernel_methods_agree",
            "tolerance_reason": "r"}


def test_report_lists_every_claim_with_verdict(tmp_path):
    records = {
        "records": {"asi": _record(30, 0, 1e-16, 1e-10, "ASI kernel vs original"),
                    "doubling_trick": _record(5, 2, 1e-3, 1e-10, "per-layer kernel")},
        "examples": {"asi": {"tests": 2, "examples": 40, "discarded": 2, "nodeids": ["a"]},
                     "doubling_trick": {"tests": 1, "examples": 5, "discarded": 0, "nodeids": ["d"]}},
        "failed": ["d"],
        "series": {"width: relu": {"x": [64, 128], "y": [0.2, 0.14], "slope": -0.5, "intercept": 0.5}},
    }
    fig = plot_series(records["series"], tmp_path / "w.png")
    mutants = [{"name": "m1", "description": "a bug", "killed": True, "killed_by": "t::x", "killed_by_claim": "asi"},
               {"name": "m2", "description": "another", "killed": False, "killed_by": None, "killed_by_claim": None}]
    report = write_report(records, tmp_path / "claims.md", profile="ci", device="cpu", dtype="float64",
                          seconds=1.0, figure=fig, mutants=mutants)
    text = report.read_text()
    assert fig is not None and fig.stat().st_size > 1000
    for claim in claims.CLAIMS.values():
        assert claim.reference in text
    assert "| 40 | 2 (5%) | 30 | 1.00e-16: ASI kernel vs original | 1.0e-10 (`kernel_methods_agree`) | holds | `m1` |" in text
    assert "FAILED (2 checks, 1 tests)" in text
    assert text.count("NOT RUN") == len(claims.CLAIMS) - 2
    assert "1 of 2 mutants killed" in text and "| `m2` | another | SURVIVED | - |" in text
    assert "| `kernel_methods_agree` | 1e-10 | 0.0001 |" in text
    assert "-0.500" in text and "![width convergence](w.png)" in text


def test_check_close_records_and_fails_with_reproduction():
    import torch

    from ntkcheck.tolerances import tolerance

    tol = tolerance("kernel_methods_agree", torch.float64)
    with claims.recording(claims.Recorder()) as rec:
        claims.check_close(torch.ones(3), torch.ones(3), tol=tol, claim="asi", what="same", context="x = 1")
        with pytest.raises(AssertionError, match=r"seed 000, Thm 4 = Thm 9 violated(.|\n)*kernel_methods_agree: Same"
                                                 r"(.|\n)*reproduce with:(.|\n)*x = 2"):
            claims.check_close(torch.ones(3) * 2, torch.ones(3), tol=tol, claim="asi", what="off", context="x = 2")
        with pytest.raises(KeyError, match="claim must be one of"):
            claims.check_at_most(0.0, tol, claim="nonsense", what="", context="")
        with pytest.raises(TypeError, match="tol must be a Bound"):
            claims.check_at_most(0.0, 1e-3, claim="asi", what="", context="")
    saved = rec.to_dict()["records"]
    assert saved["asi"]["checks"] == 2 and saved["asi"]["failures"] == 1
    assert saved["asi"]["worst_what"] == "off" and saved["asi"]["tolerance_name"] == "kernel_methods_agree"


def test_bound_keeps_its_provenance_when_scaled():
    import torch

    from ntkcheck.tolerances import Bound, tolerance

    tol = tolerance("solver_identity", torch.float32)
    scaled = 3.0 * tol * 2
    assert isinstance(scaled, Bound) and scaled.name == "solver_identity" and float(scaled) == 6.0 * float(tol)
    assert not isinstance(tol + 1.0, Bound)
