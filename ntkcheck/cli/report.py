"""``ntkcheck report``: the benchmark report of a pytest-benchmark JSON run, against a baseline if given."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ntkcheck.cli.common import FAILED, INCONCLUSIVE, OK, parse_out_folder

if TYPE_CHECKING:
    from ntkcheck.reporting.compare import Comparison

MISSING_SHOWN = 20
"""Missing benchmarks listed on the terminal when a comparison is incomplete (the report lists all)."""
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``report`` subcommand."""
    b = sub.add_parser(
        "report",
        parents=[common],
        help="benchmark report of a pytest-benchmark JSON run, against a baseline if given",
        description="Benchmark report of a pytest-benchmark JSON run, against a baseline if given. "
        "Exit status: 0 no regression, 1 a regression, 3 an incomplete comparison "
        "(fewer than --min-compared of the baseline's benchmarks in the run), 2 a bad "
        "argument or input file.",
    )
    b.add_argument(
        "run",
        metavar="RUN.json",
        nargs="+",
        help="the run (pytest --benchmark-json); several runs count by their best median per benchmark",
    )
    where = b.add_mutually_exclusive_group()
    where.add_argument(
        "--baseline",
        metavar="BASELINE.json",
        action="append",
        help="a stored run of the same machine kind (e.g. reports/baselines/<kind>.json); repeatable",
    )
    where.add_argument(
        "--baseline-dir",
        metavar="DIR",
        help="use DIR/<machine kind of the run>.json as the baseline, or none if it does not exist",
    )
    b.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="slowdown of the median flagged as a regression, as a fraction in (0, 1] (default 0.10)",
    )
    b.add_argument(
        "--min-compared",
        type=float,
        default=0.9,
        metavar="FRACTION",
        help="share of the baseline's benchmarks the run must contain for the comparison to pass, in "
        "[0, 1] (default 0.9); below it the exit status is 3 and the missing ones are listed",
    )
    b.add_argument("--out", default="reports", help="report folder (default: reports)")
    b.add_argument("--name", help="report name: <out>/<name>.md (default: bench-<RUN file stem>)")
    b.set_defaults(func=_report, check=_check_report, parser=b)


def _check_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not 0 < args.threshold <= 1:  # NaN fails too
        parser.error(f"--threshold must be a fraction in (0, 1] (0.10 flags a 10% slowdown), got {args.threshold}")
    if not 0 <= args.min_compared <= 1:
        parser.error(
            f"--min-compared must be a fraction in [0, 1] (0.9 = 90% of the baseline's benchmarks), "
            f"got {args.min_compared}"
        )
    if args.name is None:
        args.name = "bench-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(args.run[0]).stem).strip("-.") or "run")
    elif not _NAME.fullmatch(args.name):
        parser.error(f"--name must be a file stem of letters, digits, '.', '_' or '-', got {args.name!r}")
    args.out = parse_out_folder(args.out, parser)
    if args.baseline_dir is not None and Path(args.baseline_dir).exists() and not Path(args.baseline_dir).is_dir():
        parser.error(f"--baseline-dir must be a folder, got the existing file {args.baseline_dir}")
    try:
        _load(args)
    except ValueError as exc:
        parser.error(str(exc))


def _load(args: argparse.Namespace) -> None:
    """Read the run and the baseline into ``args.run_data`` and ``args.base_data`` (``ValueError`` if unreadable)."""
    from ntkcheck.reporting.runs import baseline_path, load_runs

    args.run_data = load_runs(args.run, "RUN")
    args.base_data = load_runs(args.baseline, "--baseline") if args.baseline else None
    args.no_baseline = None
    if args.baseline_dir is not None:
        stored = baseline_path(args.baseline_dir, args.run_data)
        if stored.is_file():
            args.base_data = load_runs([stored], "--baseline-dir")
        else:
            args.no_baseline = (
                f"no baseline for machine kind {args.run_data.machine_kind!r} ({stored} does "
                "not exist): reporting the run alone; store one there to compare"
            )


def _report(args: argparse.Namespace) -> int:
    from ntkcheck.reporting.benchmark_report import write_report
    from ntkcheck.reporting.compare import compare

    run, base = args.run_data, args.base_data
    if args.no_baseline:
        print(args.no_baseline)
    cmp = compare(run, base, args.threshold, args.min_compared) if base is not None else None
    path = write_report(run, out=args.out, name=args.name, comparison=cmp)
    if cmp is None:
        for warning in run.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{len(run.benchmarks)} benchmarks, no baseline; wrote {path}")
        return OK
    _print_comparison(cmp, path)
    return FAILED if cmp.regressed else INCONCLUSIVE if cmp.incomplete else OK


def _print_comparison(cmp: Comparison, path: Path) -> None:
    """The warnings, the regressions, the counts and, when incomplete, the missing benchmarks."""
    for warning in cmp.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for row in cmp.timings:
        if row.regressed:
            print(
                f"REGRESSED {row.name}: median {row.base.median:.4g} s -> {row.run.median:.4g} s "
                f"(ratio {row.ratio:.2f})"
            )
    for m in cmp.metrics:
        if m.regressed:
            print(f"REGRESSED {m.name} {m.metric}: {m.base:.4g} -> {m.run:.4g}, band [{m.low:.4g}, {m.high:.4g}]")
    n_bad = sum(r.regressed for r in cmp.timings) + sum(m.regressed for m in cmp.metrics)
    print(
        f"{len(cmp.timings)} timings and {len(cmp.metrics)} metrics compared, {n_bad} regressed"
        f"{', the whole run is slower' if cmp.run_wide else ''}; {len(cmp.new)} new, {len(cmp.missing)} missing; "
        f"wrote {path}"
    )
    if cmp.incomplete:
        print(
            f"INCOMPLETE: {len(cmp.timings)} of the baseline's {cmp.baseline_count} benchmarks compared "
            f"({cmp.compared_share:.0%}), fewer than --min-compared {cmp.min_compared:g}; missing from the run:"
        )
        for name in cmp.missing[:MISSING_SHOWN]:
            print(f"  {name}")
        if len(cmp.missing) > MISSING_SHOWN:
            print(f"  ... and {len(cmp.missing) - MISSING_SHOWN} more (all listed in {path})")
