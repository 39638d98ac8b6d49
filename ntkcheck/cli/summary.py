"""``ntkcheck summary``: compute kernels of a few MLPs on the available device and report."""

from __future__ import annotations

import argparse

import torch

from ntkcheck.cli.common import FAILED, OK, parse_device, parse_out_folder


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``summary`` subcommand."""
    p = sub.add_parser(
        "summary", parents=[common], help="compute kernels of a few MLPs on the available device and report"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quick", action="store_true", help="the two small networks only")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.set_defaults(func=_summary, check=_check_summary, parser=p)


def _check_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = parse_device(args.device, parser)
    args.out = parse_out_folder(args.out, parser)


def _summary(args: argparse.Namespace) -> int:
    from ntkcheck.reporting.summary import run_summary, write_summary

    where = torch.device(args.device)
    rows = run_summary(where, quick=args.quick)
    path = write_summary(rows, out=args.out, device=where)
    for r in rows:
        print(
            f"{r.architecture}  N={r.n} {r.dtype}: methods agree to {r.max_disagreement:.1e}; "
            f"layerwise {r.layerwise_s:.4f}s vs jacobian {r.jacobian_s:.4f}s"
        )
    print(f"wrote {path}")
    bad = [r for r in rows if r.max_disagreement > (1e-10 if r.dtype == "float64" else 1e-4)]
    return FAILED if bad else OK
