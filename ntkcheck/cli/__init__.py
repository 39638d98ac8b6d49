"""The ntkcheck command.

Every argument is checked before any work starts; a bad one ends the command with one line on
stderr, "ntkcheck COMMAND: error: <what was expected, and what was given>", and exit status 2.
An error during the work ends it with one line too (--traceback, or NTKCHECK_DEBUG=1, shows the
traceback instead).

Exit status:
  0    everything checked holds (no regression, every claim and reproduction holds)
  1    a check failed: a claim, a reproduction, a surviving mutant, a benchmark regression,
       kernel methods that disagree
  2    a bad command line or input file (nothing was run or written)
  3    the check could not be made: report compared fewer than --min-compared of the
       baseline's benchmarks (1 wins if the run also regressed), verify ran no claim at all,
       or an error stopped the work
  130  interrupted"""

from __future__ import annotations

import argparse
import os
import sys

from ntkcheck.cli import kernel, report, reproduce, summary, verify
from ntkcheck.cli.common import INCONCLUSIVE, INTERRUPTED, OK, USAGE, CommandParser, one_line

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ntkcheck`` parser: one subcommand per module of this package."""
    parser = CommandParser(prog="ntkcheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        help="on an error during the work, show the traceback instead of one line (also NTKCHECK_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (summary, verify, reproduce, report, kernel):
        command.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ntkcheck`` command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        args.check(args, args.parser)
    except SystemExit as exc:  # argparse: --help (0) or a bad argument (2), its message already printed
        return OK if exc.code is None else exc.code if isinstance(exc.code, int) else USAGE
    debug = args.traceback or os.environ.get("NTKCHECK_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{args.parser.prog}: interrupted; reports being written were left as they were", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"{args.parser.prog}: error: {one_line(exc)} (--traceback shows where)", file=sys.stderr)
        return INCONCLUSIVE
