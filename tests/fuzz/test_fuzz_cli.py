"""Bad command lines for every ntkcheck subcommand, run in-process through ``ntkcheck.cli.main``.

Each must end with exit status 2 and exactly one line on stderr, ``ntkcheck[ COMMAND]: error: ...``
(no usage block, no traceback), naming the offending option, before any work starts: the work
functions are replaced by ones that fail the test, nothing may be written, and each command
must finish well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

import ntkcheck.experiments
import ntkcheck.reporting.benchmark_report
import ntkcheck.reporting.summary
import ntkcheck.testing.mutants
import ntkcheck.testing.verify
from ntkcheck.cli import main

KIND = "cpu-test"


def _run_json(fullname: str = "b.py::test_a", **stats: object) -> dict:
    entry = {
        "fullname": fullname,
        "name": fullname.split("::")[-1],
        "options": {"timer": "perf_counter"},
        "stats": {"median": 1.0, "iqr": 0.1, "min": 0.9, "rounds": 5, **stats},
    }
    return {"machine_info": {"ntkcheck": {"machine_kind": KIND}}, "benchmarks": [entry]}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the command lines refer to: an empty --out folder, an existing file, good and bad JSON runs."""
    (tmp_path / "out").mkdir()
    (tmp_path / "a-file").write_text("keep")
    (tmp_path / "run.json").write_text(json.dumps(_run_json()))
    (tmp_path / "base.json").write_text(json.dumps(_run_json()))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    (tmp_path / "zero.json").write_text(json.dumps(_run_json(median=0.0)))
    (tmp_path / "rounds.json").write_text(json.dumps(_run_json(rounds=0)))
    (tmp_path / "kinds").mkdir()
    (tmp_path / "kinds" / f"{KIND}.json").write_text("[1, 2]")
    paths = {
        name.removesuffix(".json"): str(tmp_path / name)
        for name in (
            "out",
            "a-file",
            "run.json",
            "base.json",
            "bad.json",
            "empty.json",
            "zero.json",
            "rounds.json",
            "kinds",
        )
    }
    return paths | {"missing": str(tmp_path / "missing.json")}


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Every subcommand's work fails the test if it starts; CUDA is unavailable unless a case says otherwise."""

    def started(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    for module, name in (
        (ntkcheck.reporting.summary, "run_summary"),
        (ntkcheck.testing.verify, "run_properties"),
        (ntkcheck.testing.verify, "verify"),
        (ntkcheck.experiments, "reproduce"),
        (ntkcheck.reporting.benchmark_report, "write_report"),
    ):
        monkeypatch.setattr(module, name, started)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)


def _one_cuda_device(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)


def _no_xdist(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xdist" else real(name, *a))


SETUPS = {"one-cuda": _one_cuda_device, "no-xdist": _no_xdist}

# (id, argv with {placeholders} from the files fixture, text the error line must contain, setup)
CASES = [
    # no subcommand, or an unknown one
    ("none", [], "COMMAND", None),
    ("unknown-command", ["frobnicate"], "COMMAND", None),
    ("command-case", ["Summary"], "COMMAND", None),
    ("option-before-command", ["--bogus"], "COMMAND", None),
    # summary
    ("summary-device-bogus", ["summary", "--device", "bogus"], "--device", None),
    ("summary-device-tpu", ["summary", "--device", "tpu"], "--device", None),
    ("summary-device-meta", ["summary", "--device", "meta"], "--device meta", None),
    ("summary-device-upper", ["summary", "--device", "CPU"], "--device", None),
    ("summary-device-empty", ["summary", "--device", ""], "--device", None),
    ("summary-device-cuda-none", ["summary", "--device", "cuda"], "--device cuda", None),
    ("summary-device-cuda-index", ["summary", "--device", "cuda:1"], "--device cuda:1", "one-cuda"),
    ("summary-device-no-value", ["summary", "--device"], "--device", None),
    ("summary-out-file", ["summary", "--device", "cpu", "--out", "{a-file}"], "--out", None),
    ("summary-out-below-file", ["summary", "--device", "cpu", "--out", "{a-file}/sub"], "--out", None),
    ("summary-out-empty", ["summary", "--device", "cpu", "--out", ""], "--out", None),
    ("summary-unknown-option", ["summary", "--bogus"], "--bogus", None),
    ("summary-stray-argument", ["summary", "stray"], "stray", None),
    # verify
    ("verify-device-meta", ["verify", "--device", "meta", "--out", "{out}"], "--device meta", None),
    ("verify-device-mps", ["verify", "--device", "mps", "--out", "{out}"], "--device", None),
    ("verify-device-cuda-none", ["verify", "--device", "cuda:0", "--out", "{out}"], "--device cuda:0", None),
    ("verify-device-cuda-index", ["verify", "--device", "cuda:0", "--out", "{out}"], "--device cuda:0", "one-cuda"),
    ("verify-workers-zero", ["verify", "--workers", "0", "--out", "{out}"], "--workers", None),
    ("verify-workers-negative", ["verify", "--workers", "-3", "--out", "{out}"], "--workers", None),
    ("verify-workers-word", ["verify", "--workers", "two", "--out", "{out}"], "--workers", None),
    ("verify-workers-float", ["verify", "--workers", "1.5", "--out", "{out}"], "--workers", None),
    ("verify-workers-no-xdist", ["verify", "--workers", "2", "--out", "{out}"], "--workers 2", "no-xdist"),
    ("verify-dtype", ["verify", "--dtype", "float16", "--out", "{out}"], "--dtype", None),
    ("verify-profile", ["verify", "--profile", "fast", "--out", "{out}"], "--profile", None),
    ("verify-mutant-unknown", ["verify", "--mutants", "no_such_mutant", "--out", "{out}"], "--mutants", None),
    ("verify-out-file", ["verify", "--out", "{a-file}"], "--out", None),
    ("verify-out-below-file", ["verify", "--out", "{a-file}/deeper/still"], "--out", None),
    # reproduce
    ("reproduce-seed-negative", ["reproduce", "--seed", "-1", "--out", "{out}"], "--seed", None),
    ("reproduce-seed-2**64", ["reproduce", "--seed", "18446744073709551616", "--out", "{out}"], "--seed", None),
    ("reproduce-seed-2**32", ["reproduce", "--seed", "4294967296", "--out", "{out}"], "--seed", None),
    ("reproduce-seed-word", ["reproduce", "--seed", "abc", "--out", "{out}"], "--seed", None),
    ("reproduce-seed-float", ["reproduce", "--seed", "1.5", "--out", "{out}"], "--seed", None),
    ("reproduce-seed-no-value", ["reproduce", "--seed"], "--seed", None),
    ("reproduce-device-tpu", ["reproduce", "--device", "tpu", "--out", "{out}"], "--device", None),
    ("reproduce-device-meta", ["reproduce", "--device", "meta", "--out", "{out}"], "--device meta", None),
    ("reproduce-device-cuda-none", ["reproduce", "--device", "cuda", "--out", "{out}"], "--device cuda", None),
    ("reproduce-unknown-name", ["reproduce", "fig-9", "--out", "{out}"], "NAME", None),
    ("reproduce-unknown-second-name", ["reproduce", "asi-1d", "fig-9", "--out", "{out}"], "'fig-9'", None),
    ("reproduce-quick-and-full", ["reproduce", "--quick", "--full", "--out", "{out}"], "--full", None),
    ("reproduce-out-file", ["reproduce", "asi-1d", "--device", "cpu", "--out", "{a-file}"], "--out", None),
    ("reproduce-out-below-file", ["reproduce", "--device", "cpu", "--out", "{a-file}/x"], "--out", None),
    # report
    ("report-no-run", ["report"], "RUN.json", None),
    ("report-run-missing", ["report", "{missing}", "--out", "{out}"], "RUN", None),
    ("report-run-not-json", ["report", "{bad}", "--out", "{out}"], "RUN", None),
    ("report-run-empty", ["report", "{empty}", "--out", "{out}"], "RUN", None),
    ("report-run-median-zero", ["report", "{zero}", "--out", "{out}"], "RUN", None),
    ("report-run-rounds-zero", ["report", "{rounds}", "--out", "{out}"], "RUN", None),
    ("report-second-run-bad", ["report", "{run}", "{bad}", "--out", "{out}"], "RUN", None),
    ("report-baseline-not-json", ["report", "{run}", "--baseline", "{bad}", "--out", "{out}"], "--baseline", None),
    ("report-baseline-missing", ["report", "{run}", "--baseline", "{missing}", "--out", "{out}"], "--baseline", None),
    (
        "report-baseline-dir-file",
        ["report", "{run}", "--baseline-dir", "{a-file}", "--out", "{out}"],
        "--baseline-dir",
        None,
    ),
    (
        "report-baseline-dir-bad-json",
        ["report", "{run}", "--baseline-dir", "{kinds}", "--out", "{out}"],
        "--baseline-dir",
        None,
    ),
    (
        "report-baseline-and-dir",
        ["report", "{run}", "--baseline", "{base}", "--baseline-dir", "{kinds}", "--out", "{out}"],
        "--baseline-dir",
        None,
    ),
    ("report-threshold-negative", ["report", "{run}", "--threshold", "-1", "--out", "{out}"], "--threshold", None),
    ("report-threshold-zero", ["report", "{run}", "--threshold", "0", "--out", "{out}"], "--threshold", None),
    ("report-threshold-nan", ["report", "{run}", "--threshold", "nan", "--out", "{out}"], "--threshold", None),
    ("report-threshold-inf", ["report", "{run}", "--threshold", "inf", "--out", "{out}"], "--threshold", None),
    ("report-threshold-above-1", ["report", "{run}", "--threshold", "1.5", "--out", "{out}"], "--threshold", None),
    ("report-threshold-word", ["report", "{run}", "--threshold", "ten", "--out", "{out}"], "--threshold", None),
    (
        "report-min-compared-above-1",
        ["report", "{run}", "--min-compared", "1.5", "--out", "{out}"],
        "--min-compared",
        None,
    ),
    (
        "report-min-compared-negative",
        ["report", "{run}", "--min-compared", "-0.1", "--out", "{out}"],
        "--min-compared",
        None,
    ),
    ("report-min-compared-nan", ["report", "{run}", "--min-compared", "nan", "--out", "{out}"], "--min-compared", None),
    ("report-out-file", ["report", "{run}", "--out", "{a-file}"], "--out", None),
    ("report-name-path", ["report", "{run}", "--name", "../escape", "--out", "{out}"], "--name", None),
    ("report-name-space", ["report", "{run}", "--name", "a b", "--out", "{out}"], "--name", None),
    ("report-unknown-option", ["report", "{run}", "--baseline-file", "x", "--out", "{out}"], "--baseline-file", None),
]
ERROR_LINE = re.compile(r"ntkcheck(?: (?:summary|verify|reproduce|report))?: error: [^\n]+\n")


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv,fragment,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line(argv, fragment, setup, files, tmp_path, capsys, monkeypatch):
    if setup is not None:
        SETUPS[setup](monkeypatch)
    argv = [a.format_map(files) for a in argv]
    before = _tree(tmp_path)
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 2, (code, captured)
    assert ERROR_LINE.fullmatch(captured.err), captured.err
    assert fragment in captured.err and captured.out == ""
    assert _tree(tmp_path) == before  # nothing written, in --out or anywhere else
    assert seconds < 0.5, f"{seconds:.2f} s: work before the argument check?"


def test_case_count():
    assert len(CASES) >= 45 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] if c[1] else "" for c in CASES} >= {"", "frobnicate", "summary", "verify", "reproduce", "report"}
