"""``ntkcheck verify``: run the property suite and write the claims report (the main job)."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ntkcheck.cli.common import parse_device, parse_out_folder

if TYPE_CHECKING:
    from ntkcheck.experiments import Reproduction


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``verify`` subcommand."""
    v = sub.add_parser(
        "verify",
        parents=[common],
        help="run the property suite and write the claims report (the main job)",
        description="Run the property suite and write <out>/claims-<device>-<dtype>.md. If no claim "
        "runs at all (a collection error, a -k selecting nothing), nothing is written "
        "and the exit status is 3.",
    )
    v.add_argument(
        "--profile",
        default="ci",
        choices=["dev", "ci", "ci-random", "thorough", "gpu"],
        help="Hypothesis settings profile (default: ci)",
    )
    v.add_argument("--device", default="cpu", help="cpu (default), cuda or auto (CUDA_VISIBLE_DEVICES picks the GPU)")
    v.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    v.add_argument("--out", default="reports", help="report folder (default: reports)")
    v.add_argument("--reproduce", action="store_true", help="also run the quick reproductions and link their reports")
    v.add_argument(
        "--mutants",
        nargs="*",
        metavar="NAME",
        default=None,
        help="also run the properties against each mutant of ntkcheck.testing.mutants (all, or the NAMEs "
        "given) and report the mutation score; a surviving mutant makes the exit status 1",
    )
    v.add_argument(
        "--workers",
        type=int,
        default=1,
        help="pytest-xdist worker processes for the property runs (default 1; more need pytest-xdist)",
    )
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v.set_defaults(func=_verify, check=_check_verify, parser=v)


def _check_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = parse_device(args.device, parser, indexed=False)
    args.out = parse_out_folder(args.out, parser)
    if args.workers < 1:
        parser.error(f"--workers must be a positive integer, got {args.workers}")
    if args.workers > 1:
        import importlib.util

        if importlib.util.find_spec("xdist") is None:
            parser.error(
                f"--workers {args.workers} needs pytest-xdist, which is not installed "
                "(pip install pytest-xdist, or --workers 1)"
            )
    if args.mutants is not None:
        from ntkcheck.testing.mutants import catalogue

        unknown = [n for n in args.mutants if n not in catalogue()]
        if unknown:
            parser.error(
                f"--mutants: unknown mutant {unknown[0]!r}; NAME must be one of {', '.join(sorted(catalogue()))}"
            )


def _run_reproductions(*, device: str, out: Path) -> list[tuple[Reproduction, Path]]:
    """Run every reproduction in quick mode and write its report; return the results with their paths."""
    from ntkcheck.experiments import EXPERIMENTS, reproduce
    from ntkcheck.experiments import write_report as write_reproduction

    done = []
    for name in EXPERIMENTS:
        result = reproduce(name, "quick", device=device)
        done.append((result, write_reproduction(result, out=out)))
    return done


def _verify(args: argparse.Namespace) -> int:
    from ntkcheck.testing.verify import verify

    reproductions = partial(_run_reproductions, device=args.device, out=args.out) if args.reproduce else None
    result = verify(
        profile=args.profile,
        device=args.device,
        dtype=args.dtype,
        out=args.out,
        extra=args.pytest_args,
        reproductions=reproductions,
        mutants=args.mutants,
        workers=args.workers,
    )
    print(f"wrote {result.report}" + (f" and {result.figure}" if result.figure else ""))
    return result.exit_code
