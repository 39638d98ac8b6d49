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


def _verify(args: argparse.Namespace) -> int:
    from ntkcheck.verify import verify

    device = str(_device(args.device))
    result = verify(profile=args.profile, device=device, dtype=args.dtype, out=Path(args.out), extra=args.pytest_args)
    print(f"wrote {result.report}" + (f" and {result.figure}" if result.figure else ""))
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkcheck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="compute kernels of a few MLPs on the available device and report")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quick", action="store_true", help="the two small networks only")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.set_defaults(func=_summary)
    v = sub.add_parser("verify", help="run the property suite and write the claims report (the main job)")
    v.add_argument("--profile", default="ci", choices=["dev", "ci", "thorough", "gpu"],
                   help="Hypothesis settings profile (default: ci)")
    v.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    v.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    v.add_argument("--out", default="reports", help="report folder (default: reports)")
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v.set_defaults(func=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
