"""``ntkcheck reproduce``: rerun the seed papers' experiments and write their reports."""

from __future__ import annotations

import argparse

from ntkcheck.cli.common import FAILED, OK, parse_device, parse_out_folder

SEED_MAX = 2**32 - 1
"""Largest seed: numpy's ``default_rng``/``RandomState`` and torch's generators all take [0, 2**32 - 1]."""


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``reproduce`` subcommand."""
    r = sub.add_parser(
        "reproduce", parents=[common], help="rerun the seed papers' experiments and write reports/reproduce-<name>.md"
    )
    r.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sizes for 2 CPU cores, minutes in total (default)")
    size.add_argument("--full", action="store_true", help="the papers' sizes, meant for a GPU")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    r.add_argument("--seed", type=int, default=0, help="seed of every random draw, in [0, 2**32 - 1] (default 0)")
    r.add_argument("--out", default="reports", help="report folder (default: reports)")
    r.set_defaults(func=_reproduce, check=_check_reproduce, parser=r)


def _check_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from ntkcheck.experiments import EXPERIMENTS

    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment {unknown[0]!r}: NAME must be one of {', '.join(EXPERIMENTS)}")
    args.names = list(dict.fromkeys(args.names)) or list(EXPERIMENTS)
    if not 0 <= args.seed <= SEED_MAX:
        parser.error(f"--seed must be an int in [0, 2**32 - 1] (numpy/torch seed range), got {args.seed}")
    args.device = parse_device(args.device, parser)
    args.out = parse_out_folder(args.out, parser)


def _reproduce(args: argparse.Namespace) -> int:
    from ntkcheck.experiments import reproduce, write_report

    failed = []
    for name in args.names:
        result = reproduce(name, "full" if args.full else "quick", device=args.device, seed=args.seed)
        path = write_report(result, out=args.out)
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
    return FAILED if failed else OK
