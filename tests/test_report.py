"""Benchmark comparisons (ntkcheck.reporting.runs and .compare) on small synthetic pytest-benchmark JSON files."""

from __future__ import annotations

import math

import pytest
from _benchmark_runs import bench, medians, run_json, write

from ntkcheck.cli import main
from ntkcheck.reporting.compare import MetricRow, compare
from ntkcheck.reporting.runs import Run, baseline_path, best_of, load_run


@pytest.fixture
def load(tmp_path):
    """Write a JSON object to a fresh file in tmp_path and load it with load_run."""
    count = iter(range(10**6))

    def load(data: dict) -> Run:
        return load_run(write(tmp_path, f"run{next(count)}.json", data))

    return load


@pytest.fixture
def runs(load):
    """(run, baseline) from medians: ``changed`` scales the run's medians of those cases."""

    def runs(base: dict[str, float], changed: dict[str, float]) -> tuple[Run, Run]:
        b = run_json([bench(k, v) for k, v in base.items()])
        r = run_json([bench(k, v * changed.get(k, 1.0)) for k, v in base.items()])
        return load(r), load(b)

    return runs


# --- timings --------------------------------------------------------------------------------------


def test_unchanged_run_is_not_flagged(runs):
    base = medians()
    jitter = {k: 1 + 0.03 * math.sin(i) for i, k in enumerate(base)}  # +-3%, as a quiet machine gives
    run, baseline = runs(base, jitter)
    cmp = compare(run, baseline, 0.10)
    assert not cmp.regressed and len(cmp.timings) == 10
    assert not cmp.warnings and not cmp.new and not cmp.missing


@pytest.mark.parametrize("factor,flagged", [(1.12, True), (1.08, False), (0.5, False)])
def test_flagged_beyond_threshold_only(runs, factor, flagged):
    run, baseline = runs(medians(), {"case3": factor})
    cmp = compare(run, baseline, 0.10)
    row = next(r for r in cmp.timings if r.name == "test_speed[case3]")
    assert row.ratio == pytest.approx(factor)
    assert row.regressed is flagged and cmp.regressed is flagged
    assert [r.name for r in cmp.timings if r.regressed] == (["test_speed[case3]"] if flagged else [])


def test_threshold_is_respected(runs):
    run, baseline = runs(medians(), {"case3": 1.4})
    assert compare(run, baseline, 0.10).regressed
    assert not compare(run, baseline, 0.50).regressed
    with pytest.raises(ValueError, match="threshold must be a positive number"):
        compare(run, baseline, 0.0)


def test_slowdown_within_noise_of_rounds_is_not_flagged(load):
    """Ratio 1.3, but with 3 rounds and an IQR of 60% the medians' notches overlap (rule 2)."""
    base = medians()
    b = run_json([bench(k, v, iqr=0.6 * v, rounds=3) for k, v in base.items()])
    r = run_json([bench(k, v * (1.3 if k == "case3" else 1.0), iqr=0.6 * v, rounds=3) for k, v in base.items()])
    cmp = compare(load(r), load(b))
    row = next(x for x in cmp.timings if x.name == "test_speed[case3]")
    assert row.ratio == pytest.approx(1.3) and not row.beyond_rounds and not row.regressed


def test_slowdown_within_noise_between_runs_is_not_flagged(runs):
    """Medians scattered by +-25% between runs: 1.35 does not stand out (rule 3), 3x does."""
    base = medians(20)
    scatter = {k: math.exp(0.25 * math.sin(2.0 * i)) for i, k in enumerate(base)}
    scatter["case5"], scatter["case6"] = 1.35, 3.0
    run, baseline = runs(base, scatter)
    cmp = compare(run, baseline, 0.10)
    flagged = {r.name for r in cmp.timings if r.regressed}
    assert flagged == {"test_speed[case6]"}
    assert 1.35 < cmp.detectable < 3.0
    assert not cmp.run_wide


def test_whole_run_slower_is_a_regression(runs):
    run, baseline = runs(medians(), {k: 1.5 for k in medians()})
    cmp = compare(run, baseline, 0.10)
    assert cmp.run_wide and cmp.regressed
    assert not any(r.regressed for r in cmp.timings)  # none stands out from the others...
    assert any("whole run is slower" in w for w in cmp.warnings)  # ...but the run as a whole did


def test_few_benchmarks_skip_the_between_run_rule(runs):
    run, baseline = runs(medians(3), {"case1": 1.5})
    cmp = compare(run, baseline, 0.10)
    assert cmp.spread is None and [r.name for r in cmp.timings if r.regressed] == ["test_speed[case1]"]


def test_new_and_missing_benchmarks_are_listed_not_compared(load):
    base = medians()
    b = run_json([bench(k, v) for k, v in base.items()])
    r = run_json([bench(k, v) for k, v in base.items() if k != "case0"] + [bench("fresh", 5.0)])
    cmp = compare(load(r), load(b))
    assert cmp.new == ["test_speed[fresh]"] and cmp.missing == ["test_speed[case0]"]
    assert len(cmp.timings) == 9 and not cmp.regressed


def test_best_of_runs_takes_the_smaller_median(load):
    """A burst that slowed one benchmark in one run is absorbed by a second run."""
    base = medians()
    first = run_json([bench(k, v * (1.6 if k == "case2" else 1.0)) for k, v in base.items()])
    second = run_json([bench(k, v * (1.6 if k == "case7" else 1.0)) for k, v in base.items()])
    baseline = load(run_json([bench(k, v) for k, v in base.items()]))
    assert compare(load(first), baseline).regressed
    both = best_of([load(first), load(second)])
    assert len(both.paths) == 2 and not compare(both, baseline).regressed


# --- machine information ----------------------------------------------------------------------------


def test_machine_mismatch_warns(load):
    base = medians()
    b = load(run_json([bench(k, v) for k, v in base.items()]))
    r = load(run_json([bench(k, v, timer="process_time") for k, v in base.items()], kind="NVIDIA H100", threads=2))
    warnings = compare(r, b).warnings
    assert any("machine kind differs" in w and "NVIDIA H100" in w for w in warnings)
    assert any("cpu_threads differs" in w for w in warnings)
    assert any("timer differs" in w for w in warnings)
    assert not compare(b, b).warnings


def test_baseline_path_uses_the_machine_kind(tmp_path, load):
    r = load(run_json([bench("a", 1.0)], kind="NVIDIA H100 80GB HBM3"))
    assert baseline_path(tmp_path, r) == tmp_path / "nvidia-h100-80gb-hbm3.json"


# --- tracked metrics ------------------------------------------------------------------------------


@pytest.fixture
def slope_rows(load):
    """Metric rows of a width-convergence slope stored as ``base_spec`` in the baseline, ``run_spec`` in the run."""

    def rows(base_spec: object, run_spec: object) -> list[MetricRow]:
        b = load(run_json([bench("relu-2", 1.0, extra={"tracked": {"slope": base_spec}}, test="test_width")]))
        r = load(run_json([bench("relu-2", 1.0, extra={"tracked": {"slope": run_spec}}, test="test_width")]))
        return compare(r, b, 0.10).metrics

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
    path = write(
        tmp_path,
        "run.json",
        run_json(
            [bench("relu-2", 1.0, test="test_width", extra={"tracked": {"slope": {"value": 0.2, "band": [-1, 0]}}})]
        ),
    )
    assert main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert "| `test_width[relu-2]` | slope | 0.2 | [-1, 0] | yes |" in (tmp_path / "bench-run.md").read_text()


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,message",
    [
        (None, r"RUN \(.*missing.json\): no such file"),
        ("{not json", "RUN .* is not a pytest-benchmark JSON file: not JSON"),
        ({"results": []}, "RUN .* expected an object with a 'benchmarks' list"),
        (run_json([]), "RUN .* holds no benchmarks"),
        (run_json([{"fullname": "x", "stats": {"median": "fast"}}]), "RUN .* benchmark 0 lacks"),
        (run_json([bench("a", 0.0)]), "RUN .* has median 0.0"),
        (run_json([bench("a", 1.0, rounds=0)]), r"RUN .* has rounds 0; expected a whole number >= 1"),
        (run_json([bench("a", 1.0, iqr=-0.1)]), r"RUN .* has iqr -0.1 and min 0.97; expected >= 0"),
        (
            run_json([{**bench("a", 1.0), "options": {"timer": ["perf_counter"]}}]),
            r"RUN .* options.timer must be a string",
        ),
        (run_json([{**bench("a", 1.0), "name": 7}]), r"RUN .* 'name' must be a string"),
        (
            run_json([bench("a", 1.0, extra={"widths": [64, 128], "errors": ["0.3", 0.2]})]),
            r"RUN .* extra_info 'widths' and 'errors' must be lists of positive numbers of the same length",
        ),
        (run_json([bench("a", 1.0, extra={"widths": [64, 128], "errors": [0.3]})]), r"RUN .* 'widths' and 'errors'"),
    ],
    ids=[
        "missing",
        "not-json",
        "not-benchmark-json",
        "no-benchmarks",
        "stats-not-numeric",
        "median-zero",
        "rounds-zero",
        "iqr-negative",
        "timer-not-str",
        "name-not-str",
        "errors-not-numbers",
        "curve-lengths-differ",
    ],
)
def test_bad_input_names_the_argument(tmp_path, content, message):
    path = tmp_path / "missing.json" if content is None else write(tmp_path, "bad.json", content)
    with pytest.raises(ValueError, match=message):
        load_run(path, "RUN")


def test_cli_bad_input_exits_2_naming_the_argument(tmp_path, capsys):
    good = write(tmp_path, "good.json", run_json([bench("a", 1.0)]))
    bad = write(tmp_path, "bad.json", "[1, 2]")
    assert main(["report", str(good), "--baseline", str(bad), "--out", str(tmp_path)]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "RUN" in capsys.readouterr().err
    assert main(["report", str(good), "--threshold", "-1", "--out", str(tmp_path)]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_regression_takes_precedence_over_an_incomplete_comparison(load):
    base = load(run_json([bench(f"case{i}", 0.001) for i in range(10)]))
    run = load(run_json([bench("case0", 0.003)]))
    cmp = compare(run, base, 0.10)
    assert cmp.incomplete and cmp.regressed and cmp.compared_share == pytest.approx(0.1)
    assert not compare(run, base, 0.10, min_compared=0.1).incomplete
    with pytest.raises(ValueError, match="min_compared must be a fraction in"):
        compare(run, base, 0.10, min_compared=1.5)
