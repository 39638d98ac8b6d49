"""The ``ntkcheck`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def _summary(args: argparse.Namespace) -> int:
    from ntkcheck.summary import run_summary, write_summary

    device = _device(args.device)
    rows = run_summary(device, quick=args.quick)
    path = write_summary(rows, device, Path(args.out) / "summary.md")
    for r in rows:
        print(f"{r.architecture}  N={r.n} {r.dtype}: methods agree to {r.max_disagreement:.1e}; "
              f"layerwise {r.layerwise_s:.4f}s vs jacobian {r.jacobian_s:.4f}s")
    print(f"wrote {path}")
    bad = [r for r in rows if r.max_disagreement > (1e-10 if r.dtype == "float64" else 1e-4)]
    return 1 if bad else 0


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a positive integer, got {value}")
    return value


def _verify(args: argparse.Namespace) -> int:
    from ntkcheck.verify import verify

    device = str(_device(args.device))
    if args.mutants is not None:
        from ntkcheck.testing.mutants import catalogue

        unknown = [n for n in args.mutants if n not in catalogue()]
        if unknown:
            raise SystemExit(f"unknown mutant(s) {unknown}; choose from {sorted(catalogue())}")
    result = verify(profile=args.profile, device=device, dtype=args.dtype, out=Path(args.out), extra=args.pytest_args,
                    reproductions=args.reproduce, mutants=args.mutants, workers=args.workers)
    print(f"wrote {result.report}" + (f" and {result.figure}" if result.figure else ""))
    return result.exit_code


def _reproduce(args: argparse.Namespace) -> int:
    from ntkcheck.reproduce import EXPERIMENTS, reproduce, write_report

    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)}")
    device = str(_device(args.device))
    failed = []
    for name in names:
        result = reproduce(name, "full" if args.full else "quick", device=device, seed=args.seed)
        path = write_report(result, Path(args.out))
        if result.skipped:
            print(f"[{name}] skipped: {result.skipped}")
            continue
        for v in result.verdicts:
            print(f"[{name}] {v.line()}")
        print(f"[{name}] {result.seconds:.1f} s, wrote {path}")
        if not result.holds:
            failed.append(name)
    if failed:
        print(f"claims that did not come out: {failed} (see their reports)")
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from ntkcheck.report import baseline_path, load_runs, write_report

    try:
        run = load_runs(args.run, "RUN")
        base = load_runs(args.baseline, "--baseline") if args.baseline else None
        if args.baseline_dir is not None:
            stored = baseline_path(args.baseline_dir, run)
            if stored.is_file():
                base = load_runs([stored], "--baseline-dir")
            else:
                print(f"no baseline for machine kind {run.machine_kind!r} ({stored} does not exist): "
                      "reporting the run alone; store one there to compare")
        if not args.threshold > 0:
            raise ValueError(f"--threshold must be a positive fraction (0.10 = 10%), got {args.threshold}")
        name = args.name or f"bench-{Path(args.run[0]).stem}"
        path, cmp = write_report(run, Path(args.out), name, base, args.threshold)
    except ValueError as exc:
        print(f"ntkcheck report: error: {exc}", file=sys.stderr)
        return 2
    if cmp is None:
        for warning in run.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{len(run.benchmarks)} benchmarks, no baseline; wrote {path}")
        return 0
    for warning in cmp.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for row in cmp.timings:
        if row.regressed:
            print(f"REGRESSED {row.name}: median {row.base.median:.4g} s -> {row.run.median:.4g} s "
                  f"(ratio {row.ratio:.2f})")
    for m in cmp.metrics:
        if m.regressed:
            print(f"REGRESSED {m.name} {m.metric}: {m.base:.4g} -> {m.run:.4g}, band [{m.low:.4g}, {m.high:.4g}]")
    n_bad = sum(r.regressed for r in cmp.timings) + sum(m.regressed for m in cmp.metrics)
    print(f"{len(cmp.timings)} timings and {len(cmp.metrics)} metrics compared, {n_bad} regressed"
          f"{', the whole run is slower' if cmp.run_wide else ''}; {len(cmp.new)} new, {len(cmp.missing)} missing; "
          f"wrote {path}")
    return 1 if cmp.regressed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkcheck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="compute kernels of a few MLPs on the available device and report")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quick", action="store_true", help="the two small networks only")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.set_defaults(func=_summary)
    v = sub.add_parser("verify", help="run the property suite and write the claims report (the main job)")
    v.add_argument("--profile", default="ci", choices=["dev", "ci", "ci-random", "thorough", "gpu"],
                   help="Hypothesis settings profile (default: ci)")
    v.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    v.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    v.add_argument("--out", default="reports", help="report folder (default: reports)")
    v.add_argument("--reproduce", action="store_true", help="also run the quick reproductions and link their reports")
    v.add_argument("--mutants", nargs="*", metavar="NAME", default=None,
                   help="also run the properties against each mutant of ntkcheck.testing.mutants (all, or the NAMEs "
                        "given) and report the mutation score; a surviving mutant makes the exit status 1")
    v.add_argument("--workers", type=_workers, default=1,
                   help="pytest-xdist worker processes for the property runs (default 1; needs pytest-xdist)")
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v.set_defaults(func=_verify)
    r = sub.add_parser("reproduce", help="rerun the seed papers' experiments and write reports/reproduce-<name>.md")
    r.add_argument("names", nargs="*", help="experiments to run (default: all)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sizes for 2 CPU cores, minutes in total (default)")
    size.add_argument("--full", action="store_true", help="the papers' sizes, meant for a GPU")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    r.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    r.add_argument("--out", default="reports", help="report folder (default: reports)")
    r.set_defaults(func=_reproduce)
    b = sub.add_parser("report", help="benchmark report of a pytest-benchmark JSON run, against a baseline if given")
    b.add_argument("run", metavar="RUN.json", nargs="+",
                   help="the run (pytest --benchmark-json); several runs count by their best median per benchmark")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--baseline", metavar="BASELINE.json", action="append",
                       help="a stored run of the same machine kind (e.g. reports/baselines/<kind>.json); repeatable")
    where.add_argument("--baseline-dir", metavar="DIR",
                       help="use DIR/<machine kind of the run>.json as the baseline, or none if it does not exist")
    b.add_argument("--threshold", type=float, default=0.10,
                   help="slowdown of the median flagged as a regression, as a fraction (default 0.10)")
    b.add_argument("--out", default="reports", help="report folder (default: reports)")
    b.add_argument("--name", help="report name: <out>/<name>.md (default: bench-<RUN file stem>)")
    b.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
