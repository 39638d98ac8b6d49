"""``ntkcheck report``: the files it writes, what an interruption leaves, and coverage of the baseline."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from _benchmark_runs import KIND, bench, medians, run_json, write

from ntkcheck.cli import main

# --- the report files ---------------------------------------------------------------------------------


def _rich_run(scale: float) -> dict:
    """Throughput, memory and width-convergence entries, as the ntkcheck benchmarks write them."""
    entries = []
    for method, speed in (("layerwise", 1.0), ("jacobian", 8.0)):
        for n in (64, 256, 1024):
            for width in (128, 256):
                t = speed * 1e-6 * n * width * (scale if method == "layerwise" else 1.0)
                entries.append(
                    bench(
                        f"{method}-N{n}-m{width}",
                        t,
                        test="test_ntk_throughput",
                        extra={
                            "method": method,
                            "n": n,
                            "width": width,
                            "dtype": "float32",
                            "throughput": 1 / t,
                            "throughput_unit": "kernels/s",
                            "peak_memory_bytes": int(n * width * speed * 64),
                        },
                    )
                )
    widths = [64, 128, 256, 512]
    errors = [0.3 * (w / 64) ** -0.5 for w in widths]
    entries.append(
        bench(
            "relu-2",
            2.0,
            rounds=1,
            iqr=0.0,
            test="test_width_convergence",
            extra={
                "widths": widths,
                "errors": errors,
                "slope": -0.5,
                "intercept": math.log(0.3 * 64**0.5),
                "tracked": {"slope": -0.5},
            },
        )
    )
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


@pytest.mark.parametrize(
    "kept,args,code",
    [
        (1, [], 3),  # 1 of 54
        (48, [], 3),  # 89%
        (49, [], 0),  # 91%
        (1, ["--min-compared", "0"], 0),  # the gate switched off
        (54, ["--min-compared", "1"], 0),
    ],
)
def test_min_compared_gate(tmp_path, capsys, kept, args, code):
    base = write(tmp_path, "base.json", run_json([bench(f"case{i}", 0.001) for i in range(54)]))
    run = write(tmp_path, "run.json", run_json([bench(f"case{i}", 0.001) for i in range(kept)]))
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path), *args]) == code
    assert ("INCOMPLETE" in capsys.readouterr().out) is (code == 3)


def test_incomplete_comparison_with_a_regression_exits_1(tmp_path, capsys):
    base = write(tmp_path, "base.json", run_json([bench(f"case{i}", 0.001) for i in range(10)]))
    run = write(tmp_path, "run.json", run_json([bench("case0", 0.003)]))
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED test_speed[case0]" in out and "INCOMPLETE: 1 of the baseline's 10" in out
