"""The ntkcheck command: summary and claims report rendering."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from ntkcheck.cli import build_parser, main
from ntkcheck.testing import claims
from ntkcheck.testing.verify import plot_series, write_report


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
    return {
        "claim": "x",
        "checks": checks,
        "failures": failures,
        "worst_ratio": error / tol,
        "worst_error": error,
        "worst_tolerance": tol,
        "worst_what": what,
        "tolerance_name": "kernel_methods_agree",
        "tolerance_reason": "r",
    }


def test_report_lists_every_claim_with_verdict(tmp_path):
    records = {
        "records": {
            "asi": _record(30, 0, 1e-16, 1e-10, "ASI kernel vs original"),
            "doubling_trick": _record(5, 2, 1e-3, 1e-10, "per-layer kernel"),
        },
        "examples": {
            "asi": {"tests": 2, "examples": 40, "discarded": 2, "nodeids": ["a"]},
            "doubling_trick": {"tests": 1, "examples": 5, "discarded": 0, "nodeids": ["d"]},
        },
        "failed": ["d"],
        "series": {"width: relu": {"x": [64, 128], "y": [0.2, 0.14], "slope": -0.5, "intercept": 0.5}},
    }
    assert plot_series(records["series"]) is not None and plot_series(records["records"]) is None
    mutants = [
        {"name": "m1", "description": "a bug", "killed": True, "killed_by": "t::x", "killed_by_claim": "asi"},
        {"name": "m2", "description": "another", "killed": False, "killed_by": None, "killed_by_claim": None},
    ]
    report = write_report(
        records, out=tmp_path, profile="ci", device="cpu", dtype="float64", seconds=1.0, mutants=mutants
    )
    text = report.read_text()
    figure = tmp_path / "claims-cpu-float64-width.png"
    assert report == tmp_path / "claims-cpu-float64.md" and figure.stat().st_size > 1000
    for claim in claims.CLAIMS.values():
        assert claim.reference in text
    assert (
        "| 40 | 2 (5%) | 30 | 1.00e-16: ASI kernel vs original | 1.0e-10 (`kernel_methods_agree`) | holds | `m1` |"
        in text
    )
    assert "FAILED (2 checks, 1 tests)" in text
    assert text.count("NOT RUN") == len(claims.CLAIMS) - 2
    assert "1 of 2 mutants killed" in text and "| `m2` | another | SURVIVED | - |" in text
    assert "| `kernel_methods_agree` | 1e-10 | 0.0001 |" in text
    assert "-0.500" in text and "![width convergence](claims-cpu-float64-width.png)" in text


def test_check_close_records_and_fails_with_reproduction():
    import torch

    from ntkcheck.testing.tolerances import tolerance

    tol = tolerance("kernel_methods_agree", torch.float64)
    with claims.recording(claims.Recorder()) as rec:
        claims.check_close(torch.ones(3), torch.ones(3), tol=tol, claim="asi", what="same", context="x = 1")
        with pytest.raises(
            AssertionError,
            match=r"seed 000, Thm 4 = Thm 9 violated(.|\n)*kernel_methods_agree: Same"
            r"(.|\n)*reproduce with:(.|\n)*x = 2",
        ):
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

    from ntkcheck.testing.tolerances import Bound, tolerance

    tol = tolerance("solver_identity", torch.float32)
    scaled = 3.0 * tol * 2
    assert isinstance(scaled, Bound) and scaled.name == "solver_identity" and float(scaled) == 6.0 * float(tol)
    assert not isinstance(tol + 1.0, Bound)


# --- the command line: bad arguments, errors during the work, and what is left on disk ---------------------


@pytest.fixture
def no_work(monkeypatch):
    """Make the work of every subcommand fail loudly: an argument check must end the command first."""
    import ntkcheck.experiments
    import ntkcheck.reporting.summary
    import ntkcheck.testing.verify

    def started(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    for module, name in (
        (ntkcheck.reporting.summary, "run_summary"),
        (ntkcheck.testing.verify, "run_properties"),
        (ntkcheck.experiments, "reproduce"),
    ):
        monkeypatch.setattr(module, name, started)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def _one_error_line(capsys, prog: str, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ntkcheck {prog}: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.mark.parametrize(
    "argv,prog,fragments",
    [
        (["report", "RUN", "--out", "FILE"], "report", ["--out", "must be a folder"]),
        (["reproduce", "asi-1d", "--device", "cpu", "--out", "FILE"], "reproduce", ["--out", "must be a folder"]),
        (
            ["reproduce", "--seed", "18446744073709551616"],
            "reproduce",
            ["--seed must be an int in [0, 2**32 - 1] (numpy/torch seed range), got 18446744073709551616"],
        ),
        (
            ["reproduce", "--seed", "-1"],
            "reproduce",
            ["--seed must be an int in [0, 2**32 - 1] (numpy/torch seed range), got -1"],
        ),
        (["reproduce", "--device", "tpu"], "reproduce", ["--device", "'tpu'"]),
        (["summary", "--device", "bogus"], "summary", ["--device", "'bogus'"]),
        (["summary", "--device", "cuda"], "summary", ["--device cuda", "no CUDA device"]),
        (["verify", "--device", "meta"], "verify", ["--device meta"]),
        (["verify", "--device", "cuda:0"], "verify", ["--device cuda:0", "no CUDA device"]),
    ],
    ids=[
        "report-out-file",
        "reproduce-out-file",
        "seed-2**64",
        "seed-negative",
        "device-tpu",
        "summary-device-bogus",
        "cuda-unavailable",
        "verify-meta",
        "verify-cuda0-unavailable",
    ],
)
def test_bad_argument_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, no_work, argv, prog, fragments):
    file = tmp_path / "a-file"
    file.write_text("keep")
    run = tmp_path / "run.json"
    run.write_text(
        json.dumps(
            {
                "machine_info": {},
                "benchmarks": [
                    {"fullname": "b.py::test_a", "stats": {"median": 1.0, "iqr": 0.1, "min": 0.9, "rounds": 5}}
                ],
            }
        )
    )
    argv = [str(file) if a == "FILE" else str(run) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    _one_error_line(capsys, prog, *fragments)
    assert file.read_text() == "keep"


def test_cuda_index_beyond_the_devices_is_refused(monkeypatch, capsys, no_work):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    assert main(["summary", "--device", "cuda:1"]) == 2
    _one_error_line(capsys, "summary", "--device cuda:1", "cuda:0 to cuda:0")


def test_error_during_the_work_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    import ntkcheck.reporting.summary

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(ntkcheck.reporting.summary, "run_summary", oom)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)
    assert main(["summary", "--device", "cpu", "--out", str(tmp_path)]) == 3
    err = _one_error_line(capsys, "summary", "RuntimeError: CUDA out of memory. ...", "--traceback")
    assert "Tried to allocate" not in err and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["summary", "--device", "cpu", "--out", str(tmp_path), "--traceback"])
    monkeypatch.setenv("NTKCHECK_DEBUG", "1")
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["summary", "--device", "cpu", "--out", str(tmp_path)])


def test_interrupt_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    import ntkcheck.reporting.summary

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ntkcheck.reporting.summary, "run_summary", interrupted)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)
    code = None
    with contextlib.suppress(KeyboardInterrupt):
        code = main(["summary", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 130
    assert capsys.readouterr().err == "ntkcheck summary: interrupted; reports being written were left as they were\n"


def test_help_states_the_exit_statuses_and_options(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "Exit status:" in text and "--min-compared" in text and "NTKCHECK_DEBUG" in text
    assert main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--min-compared FRACTION" in text and "--traceback" in text and "3 an incomplete comparison" in text


def test_verify_where_no_claim_ran_keeps_the_previous_report(tmp_path, capsys, monkeypatch):
    """pytest ran nothing (collection error, nothing selected): exit 3, one line, the old report stays."""
    import ntkcheck.testing.verify

    monkeypatch.setattr(
        ntkcheck.testing.verify, "run_properties", lambda **kwargs: (2, {"records": {}, "examples": {}})
    )
    previous = tmp_path / "claims-cpu-float64.md"
    previous.write_text("the previous report")
    assert main(["verify", "--device", "cpu", "--out", str(tmp_path)]) == 3
    _one_error_line(capsys, "verify", "no claim ran (pytest exit status 2")
    assert previous.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims-cpu-float64.md"]


def test_verify_interrupted_while_writing_keeps_the_previous_report_and_figure(tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    import ntkcheck.testing.verify

    records = {
        "records": {"asi": _record(3, 0, 1e-16, 1e-10, "ASI kernel vs original")},
        "examples": {"asi": {"tests": 1, "examples": 3, "discarded": 0, "nodeids": ["a"]}},
        "failed": [],
        "series": {"width: relu": {"x": [64, 128], "y": [0.2, 0.14], "slope": -0.5, "intercept": 0.5}},
    }
    monkeypatch.setattr(ntkcheck.testing.verify, "run_properties", lambda **kwargs: (0, records))
    md, png = tmp_path / "claims-cpu-float64.md", tmp_path / "claims-cpu-float64-width.png"
    md.write_text("the previous report")
    png.write_bytes(b"the previous figure")

    def killed(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"")  # the file is created, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)
    code = None
    with contextlib.suppress(KeyboardInterrupt):
        code = main(["verify", "--device", "cpu", "--out", str(tmp_path)])
    assert md.read_text() == "the previous report" and png.read_bytes() == b"the previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == [png.name, md.name]  # no temporaries left
    assert code == 130


def test_summary_interrupted_while_writing_keeps_the_previous_summary(tmp_path, capsys, monkeypatch):
    import ntkcheck.reporting.summary

    row = ntkcheck.reporting.summary.SummaryRow("ntkcheck.MLP(8, [4], 1)", 4, "float64", 1e-16, 0.1, 0.2)
    monkeypatch.setattr(ntkcheck.reporting.summary, "run_summary", lambda device, quick: [row])
    (tmp_path / "summary.md").write_text("the previous summary")
    real = Path.write_text

    def killed(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])  # half written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)
    code = None
    with contextlib.suppress(KeyboardInterrupt):
        code = main(["summary", "--device", "cpu", "--out", str(tmp_path)])
    monkeypatch.undo()
    assert (tmp_path / "summary.md").read_text() == "the previous summary"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
    assert code == 130
