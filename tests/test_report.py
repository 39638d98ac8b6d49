"""Benchmark reports (ntkcheck.reporting.report, ``ntkcheck report``) on small synthetic pytest-benchmark JSON files."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest

from ntkcheck.reporting import report
from ntkcheck.cli import main

KIND = "cpu-2core-x86_64"


def bench(param: str, median: float, *, iqr: float | None = None, rounds: int = 20, extra: dict | None = None,
          test: str = "test_speed", timer: str = "perf_counter") -> dict:
    """One entry of a pytest-benchmark JSON file (the fields it writes; times in seconds)."""
    iqr = 0.02 * median if iqr is None else iqr
    return {
        "group": None, "name": f"{test}[{param}]", "fullname": f"benchmarks/{test}.py::{test}[{param}]",
        "params": {"case": param}, "param": param, "extra_info": extra or {},
        "options": {"disable_gc": False, "timer": timer, "min_rounds": 5, "max_time": 1.0, "min_time": 5e-06,
                    "warmup": False},
        "stats": {"min": 0.97 * median, "max": 1.05 * median, "mean": median, "stddev": iqr / 1.35,
                  "rounds": rounds, "median": median, "iqr": iqr, "q1": median - iqr / 2, "q3": median + iqr / 2,
                  "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": 0.97 * median,
                  "hd15iqr": 1.05 * median, "ops": 1 / median if median else 0.0, "total": rounds * median},
    }


def run_json(benchmarks: list[dict], *, kind: str = KIND, threads: int = 1) -> dict:
    machine = {"device": "cpu", "size_set": "cpu", "torch": "2.13.0+cpu", "cuda": None, "gpu": None, "driver": None,
               "tf32_matmul": False, "cpu_threads": threads, "machine_kind": kind}
    return {"machine_info": {"node": "host", "machine": "x86_64", "python_version": "3.11.9",
                             "cpu": {"brand_raw": "Test CPU"}, "ntkcheck": machine},
            "commit_info": {"id": "0123456789abcdef", "dirty": False, "branch": "main"},
            "benchmarks": benchmarks, "datetime": "2026-11-23T10:00:00+00:00", "version": "5.3.1"}


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def medians(n: int = 10) -> dict[str, float]:
    return {f"case{i}": 0.001 * (i + 1) for i in range(n)}


@pytest.fixture
def load(tmp_path):
    """Write a JSON object to a fresh file in tmp_path and load it with report.load_run."""
    count = iter(range(10**6))

    def load(data: dict) -> report.Run:
        return report.load_run(write(tmp_path, f"run{next(count)}.json", data))

    return load


@pytest.fixture
def runs(load):
    """(run, baseline) from medians: ``changed`` scales the run's medians of those cases."""

    def runs(base: dict[str, float], changed: dict[str, float]) -> tuple[report.Run, report.Run]:
        b = run_json([bench(k, v) for k, v in base.items()])
        r = run_json([bench(k, v * changed.get(k, 1.0)) for k, v in base.items()])
        return load(r), load(b)

    return runs


# --- timings --------------------------------------------------------------------------------------


def test_unchanged_run_is_not_flagged(runs):
    base = medians()
    jitter = {k: 1 + 0.03 * math.sin(i) for i, k in enumerate(base)}  # +-3%, as a quiet machine gives
    run, baseline = runs(base, jitter)
    cmp = report.compare(run, baseline, 0.10)
    assert not cmp.regressed and len(cmp.timings) == 10
    assert not cmp.warnings and not cmp.new and not cmp.missing


@pytest.mark.parametrize("factor,flagged", [(1.12, True), (1.08, False), (0.5, False)])
def test_flagged_beyond_threshold_only(runs, factor, flagged):
    run, baseline = runs(medians(), {"case3": factor})
    cmp = report.compare(run, baseline, 0.10)
    row = next(r for r in cmp.timings if r.name == "test_speed[case3]")
    assert row.ratio == pytest.approx(factor)
    assert row.regressed is flagged and cmp.regressed is flagged
    assert [r.name for r in cmp.timings if r.regressed] == (["test_speed[case3]"] if flagged else [])


def test_threshold_is_respected(runs):
    run, baseline = runs(medians(), {"case3": 1.4})
    assert report.compare(run, baseline, 0.10).regressed
    assert not report.compare(run, baseline, 0.50).regressed
    with pytest.raises(ValueError, match="threshold must be a positive number"):
        report.compare(run, baseline, 0.0)


def test_slowdown_within_noise_of_rounds_is_not_flagged(load):
    """Ratio 1.3, but with 3 rounds and an IQR of 60% the medians' notches overlap (rule 2)."""
    base = medians()
    b = run_json([bench(k, v, iqr=0.6 * v, rounds=3) for k, v in base.items()])
    r = run_json([bench(k, v * (1.3 if k == "case3" else 1.0), iqr=0.6 * v, rounds=3) for k, v in base.items()])
    cmp = report.compare(load(r), load(b))
    row = next(x for x in cmp.timings if x.name == "test_speed[case3]")
    assert row.ratio == pytest.approx(1.3) and not row.beyond_rounds and not row.regressed


def test_slowdown_within_noise_between_runs_is_not_flagged(runs):
    """Medians scattered by +-25% between runs: 1.35 does not stand out (rule 3), 3x does."""
    base = medians(20)
    scatter = {k: math.exp(0.25 * math.sin(2.0 * i)) for i, k in enumerate(base)}
    scatter["case5"], scatter["case6"] = 1.35, 3.0
    run, baseline = runs(base, scatter)
    cmp = report.compare(run, baseline, 0.10)
    flagged = {r.name for r in cmp.timings if r.regressed}
    assert flagged == {"test_speed[case6]"}
    assert 1.35 < cmp.detectable < 3.0
    assert not cmp.run_wide


def test_whole_run_slower_is_a_regression(runs):
    run, baseline = runs(medians(), {k: 1.5 for k in medians()})
    cmp = report.compare(run, baseline, 0.10)
    assert cmp.run_wide and cmp.regressed
    assert not any(r.regressed for r in cmp.timings)  # none stands out from the others...
    assert any("whole run is slower" in w for w in cmp.warnings)  # ...but the run as a whole did


def test_few_benchmarks_skip_the_between_run_rule(runs):
    run, baseline = runs(medians(3), {"case1": 1.5})
    cmp = report.compare(run, baseline, 0.10)
    assert cmp.spread is None and [r.name for r in cmp.timings if r.regressed] == ["test_speed[case1]"]


def test_new_and_missing_benchmarks_are_listed_not_compared(load):
    base = medians()
    b = run_json([bench(k, v) for k, v in base.items()])
    r = run_json([bench(k, v) for k, v in base.items() if k != "case0"] + [bench("fresh", 5.0)])
    cmp = report.compare(load(r), load(b))
    assert cmp.new == ["test_speed[fresh]"] and cmp.missing == ["test_speed[case0]"]
    assert len(cmp.timings) == 9 and not cmp.regressed


def test_best_of_runs_takes_the_smaller_median(load):
    """A burst that slowed one benchmark in one run is absorbed by a second run."""
    base = medians()
    first = run_json([bench(k, v * (1.6 if k == "case2" else 1.0)) for k, v in base.items()])
    second = run_json([bench(k, v * (1.6 if k == "case7" else 1.0)) for k, v in base.items()])
    baseline = load(run_json([bench(k, v) for k, v in base.items()]))
    assert report.compare(load(first), baseline).regressed
    both = report.best_of([load(first), load(second)])
    assert len(both.paths) == 2 and not report.compare(both, baseline).regressed


# --- machine information ----------------------------------------------------------------------------


def test_machine_mismatch_warns(load):
    base = medians()
    b = load(run_json([bench(k, v) for k, v in base.items()]))
    r = load(run_json([bench(k, v, timer="process_time") for k, v in base.items()], kind="NVIDIA H100", threads=2))
    warnings = report.compare(r, b).warnings
    assert any("machine kind differs" in w and "NVIDIA H100" in w for w in warnings)
    assert any("cpu_threads differs" in w for w in warnings)
    assert any("timer differs" in w for w in warnings)
    assert not report.compare(b, b).warnings


def test_baseline_path_uses_the_machine_kind(tmp_path, load):
    r = load(run_json([bench("a", 1.0)], kind="NVIDIA H100 80GB HBM3"))
    assert report.baseline_path(tmp_path, r) == tmp_path / "nvidia-h100-80gb-hbm3.json"


# --- tracked metrics ------------------------------------------------------------------------------


@pytest.fixture
def slope_rows(load):
    """Metric rows of a width-convergence slope stored as ``base_spec`` in the baseline, ``run_spec`` in the run."""

    def rows(base_spec: object, run_spec: object) -> list[report.MetricRow]:
        b = load(run_json([bench("relu-2", 1.0, extra={"tracked": {"slope": base_spec}}, test="test_width")]))
        r = load(run_json([bench("relu-2", 1.0, extra={"tracked": {"slope": run_spec}}, test="test_width")]))
        return report.compare(r, b, 0.10).metrics

    return rows


def test_metric_within_default_band_passes_and_outside_is_flagged(slope_rows):
    (ok,) = slope_rows(-0.48, -0.45)  # band -0.48 +- 0.048
    assert not ok.regressed and ok.low == pytest.approx(-0.528) and ok.high == pytest.approx(-0.432)
    (bad,) = slope_rows(-0.48, -0.30)
    assert bad.regressed


def test_metric_explicit_band_and_tol(slope_rows):
    (inside,) = slope_rows(-0.48, {"value": -0.40, "band": [-0.65, -0.35]})
    assert not inside.regressed and (inside.low, inside.high) == (-0.65, -0.35)
    (outside,) = slope_rows(-0.48, {"value": -0.30, "band": [-0.65, -0.35]})
    assert outside.regressed
    (tight,) = slope_rows(-0.48, {"value": -0.47, "tol": 0.005})
    assert tight.regressed
    (nan,) = slope_rows(-0.48, float("nan"))
    assert nan.regressed


def test_metric_without_baseline_never_fails(tmp_path, capsys):
    path = write(tmp_path, "run.json", run_json([bench("relu-2", 1.0, test="test_width",
                                                       extra={"tracked": {"slope": {"value": 0.2, "band": [-1, 0]}}})]))
    assert main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert "| `test_width[relu-2]` | slope | 0.2 | [-1, 0] | yes |" in (tmp_path / "bench-run.md").read_text()


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content,message", [
    (None, r"RUN \(.*missing.json\): no such file"),
    ("{not json", "RUN .* is not a pytest-benchmark JSON file: not JSON"),
    ({"results": []}, "RUN .* expected an object with a 'benchmarks' list"),
    (run_json([]), "RUN .* holds no benchmarks"),
    (run_json([{"fullname": "x", "stats": {"median": "fast"}}]), "RUN .* benchmark 0 lacks"),
    (run_json([bench("a", 0.0)]), "RUN .* has median 0.0"),
    (run_json([bench("a", 1.0, rounds=0)]), r"RUN .* has rounds 0; expected a whole number >= 1"),
    (run_json([bench("a", 1.0, iqr=-0.1)]), r"RUN .* has iqr -0.1 and min 0.97; expected >= 0"),
    (run_json([{**bench("a", 1.0), "options": {"timer": ["perf_counter"]}}]), r"RUN .* options.timer must be a string"),
    (run_json([{**bench("a", 1.0), "name": 7}]), r"RUN .* 'name' must be a string"),
    (run_json([bench("a", 1.0, extra={"widths": [64, 128], "errors": ["0.3", 0.2]})]),
     r"RUN .* extra_info 'widths' and 'errors' must be lists of positive numbers of the same length"),
    (run_json([bench("a", 1.0, extra={"widths": [64, 128], "errors": [0.3]})]), r"RUN .* 'widths' and 'errors'"),
], ids=["missing", "not-json", "not-benchmark-json", "no-benchmarks", "stats-not-numeric", "median-zero",
        "rounds-zero", "iqr-negative", "timer-not-str", "name-not-str", "errors-not-numbers", "curve-lengths-differ"])
def test_bad_input_names_the_argument(tmp_path, content, message):
    path = tmp_path / "missing.json" if content is None else write(tmp_path, "bad.json", content)
    with pytest.raises(ValueError, match=message):
        report.load_run(path, "RUN")


def test_cli_bad_input_exits_2_naming_the_argument(tmp_path, capsys):
    good = write(tmp_path, "good.json", run_json([bench("a", 1.0)]))
    bad = write(tmp_path, "bad.json", "[1, 2]")
    assert main(["report", str(good), "--baseline", str(bad), "--out", str(tmp_path)]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "RUN" in capsys.readouterr().err
    assert main(["report", str(good), "--threshold", "-1", "--out", str(tmp_path)]) == 2
    assert "--threshold" in capsys.readouterr().err


# --- the report files ---------------------------------------------------------------------------------


def _rich_run(scale: float) -> dict:
    """Throughput, memory and width-convergence entries, as the ntkcheck benchmarks write them."""
    entries = []
    for method, speed in (("layerwise", 1.0), ("jacobian", 8.0)):
        for n in (64, 256, 1024):
            for width in (128, 256):
                t = speed * 1e-6 * n * width * (scale if method == "layerwise" else 1.0)
                entries.append(bench(f"{method}-N{n}-m{width}", t, test="test_ntk_throughput", extra={
                    "method": method, "n": n, "width": width, "dtype": "float32", "throughput": 1 / t,
                    "throughput_unit": "kernels/s", "peak_memory_bytes": int(n * width * speed * 64)}))
    widths = [64, 128, 256, 512]
    errors = [0.3 * (w / 64) ** -0.5 for w in widths]
    entries.append(bench("relu-2", 2.0, rounds=1, iqr=0.0, test="test_width_convergence", extra={
        "widths": widths, "errors": errors, "slope": -0.5, "intercept": math.log(0.3 * 64**0.5),
        "tracked": {"slope": -0.5}}))
    return run_json(entries)


def test_report_writes_markdown_and_figures_and_flags(tmp_path, capsys):
    base = write(tmp_path, "base.json", _rich_run(1.0))
    slow = write(tmp_path, "slow.json", _rich_run(4.0))
    same = write(tmp_path, "same.json", _rich_run(1.0))
    out = tmp_path / "reports"
    assert main(["report", str(slow), "--baseline", str(base), "--out", str(out), "--name", "slow"]) == 1
    printed = capsys.readouterr().out
    assert "REGRESSED test_ntk_throughput[layerwise-N64-m128]" in printed and "(ratio 4.00)" in printed
    text = (out / "slow.md").read_text()
    assert "Verdict: **REGRESSED**: 6 of 13 timings regressed" in text
    assert "| benchmark | rounds base/run | baseline median | run median | ratio |" in text
    assert "| `test_ntk_throughput[layerwise-N64-m128]` | 20/20 | 8.19 ms | 32.8 ms | 4.00 |" in text
    assert "| `test_width_convergence[relu-2]` | slope | -0.5 | -0.5 |" in text
    for fig in ("throughput", "memory", "width", "ratios"):
        png = out / f"slow-{fig}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in text
    assert main(["report", str(same), "--baseline", str(base), "--out", str(out), "--name", "same"]) == 0
    assert "Verdict: no regression: 0 of 13 timings regressed" in (out / "same.md").read_text()


def test_report_of_the_run_alone(tmp_path, capsys):
    path = write(tmp_path, "alone.json", _rich_run(1.0))
    assert main(["report", str(path), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "bench-alone.md").read_text()
    assert "No baseline: the run alone." in text and "## Run details" in text and "Verdict" not in text
    assert not (tmp_path / "bench-alone-ratios.png").exists()


def test_baseline_dir_picks_the_machine_kind(tmp_path, capsys):
    path = write(tmp_path, "run.json", run_json([bench(k, v * 3) for k, v in medians().items()]))
    stored = tmp_path / "baselines"
    assert main(["report", str(path), "--baseline-dir", str(stored), "--out", str(tmp_path)]) == 0
    assert "no baseline for machine kind" in capsys.readouterr().out
    write(stored.mkdir() or stored, f"{KIND}.json", run_json([bench(k, v) for k, v in medians().items()]))
    assert main(["report", str(path), "--baseline-dir", str(stored), "--out", str(tmp_path)]) == 1


def test_malformed_figure_data_writes_nothing(tmp_path, capsys):
    """A width curve of strings used to fail after the first figures were written, leaving orphan PNGs."""
    entries = _rich_run(1.0)
    entries["benchmarks"][-1]["extra_info"]["errors"] = ["0.3", "0.2", "0.1", "0.05"]
    path = write(tmp_path, "odd.json", entries)
    out = tmp_path / "reports"
    assert main(["report", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ntkcheck report: error: RUN (") and "'errors'" in err
    assert not out.exists()


@pytest.mark.parametrize("kill", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_report_leaves_the_previous_one_whole(tmp_path, capsys, monkeypatch, kill):
    """A kill while the figures are written: the previous Markdown and figures stay, no temporaries remain."""
    import matplotlib.figure

    base = write(tmp_path, "base.json", _rich_run(1.0))
    slow = write(tmp_path, "slow.json", _rich_run(4.0))
    out = tmp_path / "reports"
    assert main(["report", str(base), "--out", str(out), "--name", "r"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["r-memory.png", "r-throughput.png", "r-width.png", "r.md"]
    real, calls = matplotlib.figure.Figure.savefig, []

    def dies_on_second(self, fname, *args, **kwargs):
        calls.append(fname)
        if len(calls) == 2:
            Path(fname).write_bytes(b"")  # the file was opened, then the process died
            raise kill
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", dies_on_second)
    monkeypatch.delenv("NTKCHECK_DEBUG", raising=False)
    code = None
    with contextlib.suppress(type(kill)):
        code = main(["report", str(slow), "--baseline", str(base), "--out", str(out), "--name", "r"])
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert code == (130 if isinstance(kill, KeyboardInterrupt) else 3)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ntkcheck report: ")


# --- coverage: a comparison that compared (almost) nothing cannot pass --------------------------------------


def test_baseline_sharing_no_benchmark_fails_and_lists_the_missing(tmp_path, capsys):
    base = write(tmp_path, "base.json", run_json([bench(f"case{i}", 0.001) for i in range(54)]))
    other = write(tmp_path, "other.json", run_json([bench(f"case{i}", 0.001, test="test_other") for i in range(54)]))
    assert main(["report", str(other), "--baseline", str(base), "--out", str(tmp_path / "r")]) == 3
    out = capsys.readouterr().out
    assert "0 timings and 0 metrics compared, 0 regressed; 54 new, 54 missing" in out
    assert "INCOMPLETE: 0 of the baseline's 54 benchmarks compared (0%), fewer than --min-compared 0.9" in out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  test_speed[")]
    assert len(listed) == 20 and set(listed) < {f"test_speed[case{i}]" for i in range(54)}
    assert "  ... and 34 more (all listed in " in out
    text = (tmp_path / "r" / "bench-other.md").read_text()
    assert "Verdict: **INCOMPLETE**" in text and text.count("- missing (baseline only): ") == 54
    assert "Coverage: 0 of the baseline's 54 benchmarks compared (0%)" in text


@pytest.mark.parametrize("kept,args,code", [
    (1, [], 3),  # 1 of 54
    (48, [], 3),  # 89%
    (49, [], 0),  # 91%
    (1, ["--min-compared", "0"], 0),  # the gate switched off
    (54, ["--min-compared", "1"], 0),
])
def test_min_compared_gate(tmp_path, capsys, kept, args, code):
    base = write(tmp_path, "base.json", run_json([bench(f"case{i}", 0.001) for i in range(54)]))
    run = write(tmp_path, "run.json", run_json([bench(f"case{i}", 0.001) for i in range(kept)]))
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path), *args]) == code
    assert ("INCOMPLETE" in capsys.readouterr().out) is (code == 3)


def test_regression_takes_precedence_over_an_incomplete_comparison(load):
    base = load(run_json([bench(f"case{i}", 0.001) for i in range(10)]))
    run = load(run_json([bench("case0", 0.003)]))
    cmp = report.compare(run, base, 0.10)
    assert cmp.incomplete and cmp.regressed and cmp.compared_share == pytest.approx(0.1)
    assert not report.compare(run, base, 0.10, min_compared=0.1).incomplete
    with pytest.raises(ValueError, match="min_compared must be a fraction in"):
        report.compare(run, base, 0.10, min_compared=1.5)


def test_incomplete_comparison_with_a_regression_exits_1(tmp_path, capsys):
    base = write(tmp_path, "base.json", run_json([bench(f"case{i}", 0.001) for i in range(10)]))
    run = write(tmp_path, "run.json", run_json([bench("case0", 0.003)]))
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED test_speed[case0]" in out and "INCOMPLETE: 1 of the baseline's 10" in out
