"""``ntkcheck kernel``: write the empirical NTK of a saved model to a .npy file, tile by tile."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

from ntkcheck.cli.common import OK, one_line, parse_device

_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([A-Za-z]*)")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DESCRIPTION = (
    "Write ntk(model, INPUTS, X2) to --out (a .npy file) tile by tile within --memory-budget "
    "(ntkcheck.ntk_to_file): the kernel need not fit in memory.\n\n"
    "MODEL: a whole module saved with torch.save(model, path), e.g. an ntkcheck.MLP; it is unpickled "
    "(load only files you trust) and put in eval mode. INPUTS, X2: a .npy file (np.save) or a .pt "
    "file holding one tensor (torch.save), a batch (N, ...); floats are cast to --dtype, integer "
    "token ids are kept.\n\n"
    "An interrupted run leaves OUT.partial, OUT.tiles.json and OUT.tiles.npy; the same command "
    "resumes it (other arguments are refused) and OUT appears only when complete. Under torchrun "
    "(WORLD_SIZE > 1) the command initialises the process group itself (gloo on cpu, nccl on cuda, "
    "one GPU per local rank) and the ranks share the tiles; they must share OUT's file system."
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``kernel`` subcommand."""
    k = sub.add_parser(
        "kernel",
        parents=[common],
        help="write the empirical NTK of a saved model to a .npy file, tile by tile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION,
    )
    k.add_argument("model", metavar="MODEL", help="a module saved with torch.save(model, path)")
    k.add_argument("inputs", metavar="INPUTS", help="x1: a .npy or .pt file holding a batch (N1, ...)")
    k.add_argument(
        "--x2", metavar="INPUTS2", help="x2: a .npy or .pt file (N2, ...) (default: the symmetric kernel of INPUTS)"
    )
    k.add_argument("--out", required=True, metavar="K.npy", help="the .npy file to write")
    k.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory the run may hold, e.g. 64MiB, 2GiB (default: half the device's free memory)",
    )
    k.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    k.add_argument("--dtype", choices=["float64", "float32"], help="of the model and the kernel (default: the model's)")
    k.add_argument(
        "--output",
        choices=["full", "trace", "sum"],
        default="full",
        help="full (N1, N2, O, O) (default; (N1, N2) for one output), trace or sum, as in ntkcheck.ntk",
    )
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_kernel, check=_check_kernel, parser=k)


def _size(text: str, parser: argparse.ArgumentParser, name: str) -> int:
    """A byte count such as 64MiB, 1.5GiB, 500MB or 1000000."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _UNITS:
        parser.error(f"{name} must be a size such as 64MiB, 1GiB, 500MB or a number of bytes, got {text!r}")
    n = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if n < 1:
        parser.error(f"{name} must be at least one byte, got {text!r}")
    return n


def _tensor_file(text: str, parser: argparse.ArgumentParser, name: str) -> torch.Tensor:
    """The batch (N, ...) held by a .npy file (np.save) or a .pt file (torch.save of one tensor)."""
    import numpy as np

    path = Path(text)
    if not path.is_file():
        parser.error(f"{name} {text}: no such file (expected a .npy or .pt file holding a batch (N, ...))")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            parser.error(f"{name} {text} is not a readable .npy file of numbers ({one_line(exc)})")
        if array.dtype.kind not in "fiu":
            parser.error(f"{name} {text} must hold floats or integer token ids, got dtype {array.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(array))
    elif path.suffix in (".pt", ".pth"):
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load's error for a file that is not a tensor file, whatever its type
            parser.error(f"{name} {text} cannot be read by torch.load ({one_line(exc)})")
        if not isinstance(x, torch.Tensor):
            parser.error(f"{name} {text} must hold one tensor (torch.save(x, path)), got a {type(x).__name__}")
    else:
        parser.error(f"{name} must be a .npy or .pt file, got {text!r}")
    if x.ndim == 0 or x.shape[0] == 0:
        parser.error(f"{name} {text} must hold a batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    return x


def _out_file(text: str, parser: argparse.ArgumentParser) -> Path:
    """``--out`` as a .npy file path in a folder that can be written (not an existing folder)."""
    out = Path(text)
    if not text.strip() or out.is_dir():
        parser.error(f"--out must name a .npy file, got {text!r}" + (" (a folder)" if out.is_dir() else ""))
    for where in out.parents:
        if where.exists():
            if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
                parser.error(f"--out {out}: cannot write in {where}")
            break
    return out


def _model(text: str, parser: argparse.ArgumentParser) -> torch.nn.Module:
    """MODEL: a whole module saved with ``torch.save(model, path)``, with floating-point parameters."""
    if not Path(text).is_file():
        parser.error(f"MODEL {text}: no such file (expected a module saved with torch.save(model, path))")
    try:
        model = torch.load(text, map_location="cpu", weights_only=False)
    except Exception as exc:  # whatever unpickling the file raised
        parser.error(f"MODEL {text} cannot be loaded by torch.load ({one_line(exc)})")
    if not isinstance(model, torch.nn.Module):
        parser.error(
            f"MODEL {text} must hold a whole module saved with torch.save(model, path), got a "
            f"{type(model).__name__} (a state_dict alone does not say the architecture)"
        )
    if not any(p.is_floating_point() for p in model.parameters()):
        parser.error(f"MODEL {text} has no floating-point parameters: its NTK is zero or undefined")
    return model


def _cast(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``x`` on ``device``; floats in ``dtype``, integer token ids kept as they are."""
    return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)


def _check_kernel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = parse_device(args.device, parser)
    args.memory_budget = None if args.memory_budget is None else _size(args.memory_budget, parser, "--memory-budget")
    args.out = _out_file(args.out, parser)
    model = _model(args.model, parser)
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    args.dtype = getattr(torch, args.dtype) if args.dtype else floats[0]
    if args.dtype not in (torch.float64, torch.float32):
        parser.error(f"MODEL {args.model} has dtype {args.dtype}; pass --dtype float64 or float32")
    args.model = model
    args.inputs = _tensor_file(args.inputs, parser, "INPUTS")
    args.x2 = None if args.x2 is None else _tensor_file(args.x2, parser, "--x2")
    if args.x2 is not None and args.x2.shape[1:] != args.inputs.shape[1:]:
        parser.error(
            f"--x2 rows must have the shape of INPUTS rows {tuple(args.inputs.shape[1:])}, got "
            f"{tuple(args.x2.shape[1:])}"
        )


def _kernel(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ntkcheck.kernels.out_of_core import ntk_to_file
    from ntkcheck.kernels.tile_record import sidecar_paths

    device = torch.device(args.device)
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # under torchrun
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    try:
        model = args.model.to(device=device, dtype=args.dtype).eval()
        x1 = _cast(args.inputs, device, args.dtype)
        x2 = None if args.x2 is None else _cast(args.x2, device, args.dtype)
        try:
            done = ntk_to_file(
                model,
                x1,
                x2,
                path=args.out,
                memory_budget=args.memory_budget,
                output=args.output,
                progress=not args.quiet,
            )
        except KeyboardInterrupt:
            print(
                f"{args.parser.prog}: the finished tiles are recorded in {sidecar_paths(args.out)[2]}; rerun the "
                "same command to resume",
                file=sys.stderr,
            )
            raise
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(
                f"wrote {done.path}: kernel {done.shape} {done.dtype}, {done.tiles} tiles of {done.tile} rows "
                f"({done.done_before} done before, {done.computed} computed by this process) in "
                f"{done.seconds:.1f} s"
            )
        return OK
    finally:
        if started:
            dist.destroy_process_group()
