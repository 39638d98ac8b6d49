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
import re
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch

if TYPE_CHECKING:
    from ntkcheck.experiments import Reproduction

OK, FAILED, USAGE, INCONCLUSIVE, INTERRUPTED = 0, 1, 2, 3, 130
SEED_MAX = 2**32 - 1
"""Largest seed: numpy's ``default_rng``/``RandomState`` and torch's generators all take [0, 2**32 - 1]."""
MISSING_SHOWN = 20
"""Missing benchmarks listed on the terminal when a comparison is incomplete (the report lists all)."""
_DEVICE = re.compile(r"cpu|auto|cuda(?::(\d+))?")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``<prog>: error: <message>``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


# ---------------------------------------------------------------------------------------------
# argument checks: each takes the parsed arguments and the subcommand's parser, and calls
# parser.error on the first bad one


def _device(text: str, parser: argparse.ArgumentParser, *, indexed: bool = True) -> str:
    """``--device`` as a torch device string: cpu, cuda, cuda:N (if ``indexed``), or auto (cuda if available)."""
    if text == "meta":
        parser.error("--device meta holds no data, so nothing can be computed on it; use cpu, cuda or auto")
    match = _DEVICE.fullmatch(text)
    if match is None:
        parser.error(f"--device must be cpu, cuda, cuda:N or auto (a device torch computes on), got {text!r}")
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {text}: no CUDA device is available (torch {torch.__version__}); "
                         "use --device cpu or auto")
        if match.group(1) is not None and not indexed:
            parser.error(f"--device {text}: the property suite runs on cpu or cuda; choose the GPU with "
                         f"CUDA_VISIBLE_DEVICES={match.group(1)} and --device cuda")
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            parser.error(f"--device {text}: there are {count} CUDA devices, cuda:0 to cuda:{count - 1}")
    return text


def _out(text: str, parser: argparse.ArgumentParser) -> Path:
    """``--out`` as a folder that exists or can be made: no existing file on its path, writable."""
    if not text.strip():
        parser.error(f"--out must be a folder, got {text!r}")
    out = Path(text)
    for where in (out, *out.parents):
        if where.exists():
            if not where.is_dir():
                parser.error(f"--out must be a folder or a path that does not exist yet; {where} is an existing file")
            if not os.access(where, os.W_OK | os.X_OK):
                parser.error(f"--out {out}: cannot write in {where} (permission denied)")
            break
    return out


def _check_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = _device(args.device, parser)
    args.out = _out(args.out, parser)


def _check_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = _device(args.device, parser, indexed=False)
    args.out = _out(args.out, parser)
    if args.workers < 1:
        parser.error(f"--workers must be a positive integer, got {args.workers}")
    if args.workers > 1:
        import importlib.util

        if importlib.util.find_spec("xdist") is None:
            parser.error(f"--workers {args.workers} needs pytest-xdist, which is not installed "
                         "(pip install pytest-xdist, or --workers 1)")
    if args.mutants is not None:
        from ntkcheck.testing.mutants import catalogue

        unknown = [n for n in args.mutants if n not in catalogue()]
        if unknown:
            parser.error(f"--mutants: unknown mutant {unknown[0]!r}; NAME must be one of "
                         f"{', '.join(sorted(catalogue()))}")


def _check_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from ntkcheck.experiments import EXPERIMENTS

    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment {unknown[0]!r}: NAME must be one of {', '.join(EXPERIMENTS)}")
    args.names = list(dict.fromkeys(args.names)) or list(EXPERIMENTS)
    if not 0 <= args.seed <= SEED_MAX:
        parser.error(f"--seed must be an int in [0, 2**32 - 1] (numpy/torch seed range), got {args.seed}")
    args.device = _device(args.device, parser)
    args.out = _out(args.out, parser)


def _check_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from ntkcheck.reporting.report import baseline_path, load_runs

    if not 0 < args.threshold <= 1:  # NaN fails too
        parser.error(f"--threshold must be a fraction in (0, 1] (0.10 flags a 10% slowdown), got {args.threshold}")
    if not 0 <= args.min_compared <= 1:
        parser.error(f"--min-compared must be a fraction in [0, 1] (0.9 = 90% of the baseline's benchmarks), "
                     f"got {args.min_compared}")
    if args.name is None:
        args.name = "bench-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(args.run[0]).stem).strip("-.") or "run")
    elif not _NAME.fullmatch(args.name):
        parser.error(f"--name must be a file stem of letters, digits, '.', '_' or '-', got {args.name!r}")
    args.out = _out(args.out, parser)
    if args.baseline_dir is not None and Path(args.baseline_dir).exists() and not Path(args.baseline_dir).is_dir():
        parser.error(f"--baseline-dir must be a folder, got the existing file {args.baseline_dir}")
    try:
        args.run_data = load_runs(args.run, "RUN")
        args.base_data = load_runs(args.baseline, "--baseline") if args.baseline else None
        args.no_baseline = None
        if args.baseline_dir is not None:
            stored = baseline_path(args.baseline_dir, args.run_data)
            if stored.is_file():
                args.base_data = load_runs([stored], "--baseline-dir")
            else:
                args.no_baseline = f"no baseline for machine kind {args.run_data.machine_kind!r} ({stored} does " \
                                   "not exist): reporting the run alone; store one there to compare"
    except ValueError as exc:
        parser.error(str(exc))


_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([A-Za-z]*)")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
            parser.error(f"{name} {text} is not a readable .npy file of numbers ({_one_line(exc)})")
        if array.dtype.kind not in "fiu":
            parser.error(f"{name} {text} must hold floats or integer token ids, got dtype {array.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(array))
    elif path.suffix in (".pt", ".pth"):
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load's error for a file that is not a tensor file, whatever its type
            parser.error(f"{name} {text} cannot be read by torch.load ({_one_line(exc)})")
        if not isinstance(x, torch.Tensor):
            parser.error(f"{name} {text} must hold one tensor (torch.save(x, path)), got a {type(x).__name__}")
    else:
        parser.error(f"{name} must be a .npy or .pt file, got {text!r}")
    if x.ndim == 0 or x.shape[0] == 0:
        parser.error(f"{name} {text} must hold a batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    return x


def _check_kernel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.device = _device(args.device, parser)
    args.memory_budget = None if args.memory_budget is None else _size(args.memory_budget, parser, "--memory-budget")
    out = Path(args.out)
    if not args.out.strip() or out.is_dir():
        parser.error(f"--out must name a .npy file, got {args.out!r}" + (" (a folder)" if out.is_dir() else ""))
    for where in out.parents:
        if where.exists():
            if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
                parser.error(f"--out {out}: cannot write in {where}")
            break
    args.out = out
    if not Path(args.model).is_file():
        parser.error(f"MODEL {args.model}: no such file (expected a module saved with torch.save(model, path))")
    try:
        model = torch.load(args.model, map_location="cpu", weights_only=False)
    except Exception as exc:  # whatever unpickling the file raised
        parser.error(f"MODEL {args.model} cannot be loaded by torch.load ({_one_line(exc)})")
    if not isinstance(model, torch.nn.Module):
        parser.error(f"MODEL {args.model} must hold a whole module saved with torch.save(model, path), got a "
                     f"{type(model).__name__} (a state_dict alone does not say the architecture)")
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    if not floats:
        parser.error(f"MODEL {args.model} has no floating-point parameters: its NTK is zero or undefined")
    args.dtype = getattr(torch, args.dtype) if args.dtype else floats[0]
    if args.dtype not in (torch.float64, torch.float32):
        parser.error(f"MODEL {args.model} has dtype {args.dtype}; pass --dtype float64 or float32")
    args.model = model
    args.inputs = _tensor_file(args.inputs, parser, "INPUTS")
    args.x2 = None if args.x2 is None else _tensor_file(args.x2, parser, "--x2")
    if args.x2 is not None and args.x2.shape[1:] != args.inputs.shape[1:]:
        parser.error(f"--x2 rows must have the shape of INPUTS rows {tuple(args.inputs.shape[1:])}, got "
                     f"{tuple(args.x2.shape[1:])}")


# ---------------------------------------------------------------------------------------------
# the work


def _summary(args: argparse.Namespace) -> int:
    from ntkcheck.reporting.summary import run_summary, write_summary

    device = torch.device(args.device)
    rows = run_summary(device, quick=args.quick)
    path = write_summary(rows, device, args.out / "summary.md")
    for r in rows:
        print(f"{r.architecture}  N={r.n} {r.dtype}: methods agree to {r.max_disagreement:.1e}; "
              f"layerwise {r.layerwise_s:.4f}s vs jacobian {r.jacobian_s:.4f}s")
    print(f"wrote {path}")
    bad = [r for r in rows if r.max_disagreement > (1e-10 if r.dtype == "float64" else 1e-4)]
    return FAILED if bad else OK


def _run_reproductions(*, device: str, out: Path) -> list[tuple[Reproduction, Path]]:
    """Run every reproduction in quick mode and write its report; return the results with their paths."""
    from ntkcheck.experiments import EXPERIMENTS, reproduce
    from ntkcheck.experiments import write_report as write_reproduction

    done = []
    for name in EXPERIMENTS:
        result = reproduce(name, "quick", device=device)
        done.append((result, write_reproduction(result, out)))
    return done


def _verify(args: argparse.Namespace) -> int:
    from ntkcheck.testing.verify import verify

    reproductions = partial(_run_reproductions, device=args.device, out=args.out) if args.reproduce else None
    result = verify(profile=args.profile, device=args.device, dtype=args.dtype, out=args.out, extra=args.pytest_args,
                    reproductions=reproductions, mutants=args.mutants, workers=args.workers)
    print(f"wrote {result.report}" + (f" and {result.figure}" if result.figure else ""))
    return result.exit_code


def _reproduce(args: argparse.Namespace) -> int:
    from ntkcheck.experiments import reproduce, write_report

    failed = []
    for name in args.names:
        result = reproduce(name, "full" if args.full else "quick", device=args.device, seed=args.seed)
        path = write_report(result, args.out)
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


def _report(args: argparse.Namespace) -> int:
    from ntkcheck.reporting.report import write_report

    run, base = args.run_data, args.base_data
    if args.no_baseline:
        print(args.no_baseline)
    path, cmp = write_report(run, args.out, args.name, base, args.threshold, args.min_compared)
    if cmp is None:
        for warning in run.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{len(run.benchmarks)} benchmarks, no baseline; wrote {path}")
        return OK
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
    if cmp.incomplete:
        print(f"INCOMPLETE: {len(cmp.timings)} of the baseline's {cmp.baseline_count} benchmarks compared "
              f"({cmp.compared_share:.0%}), fewer than --min-compared {args.min_compared:g}; missing from the run:")
        for name in cmp.missing[:MISSING_SHOWN]:
            print(f"  {name}")
        if len(cmp.missing) > MISSING_SHOWN:
            print(f"  ... and {len(cmp.missing) - MISSING_SHOWN} more (all listed in {path})")
    return FAILED if cmp.regressed else INCONCLUSIVE if cmp.incomplete else OK


def _kernel(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ntkcheck.kernels.out_of_core import ntk_to_file, sidecar_paths

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
        x1, x2 = (None if x is None else x.to(device=device, dtype=args.dtype if x.is_floating_point() else x.dtype)
                  for x in (args.inputs, args.x2))
        try:
            done = ntk_to_file(model, x1, x2, path=args.out, memory_budget=args.memory_budget, output=args.output,
                               progress=not args.quiet)
        except KeyboardInterrupt:
            print(f"{args.parser.prog}: the finished tiles are recorded in {sidecar_paths(args.out)[2]}; rerun the "
                  "same command to resume", file=sys.stderr)
            raise
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"wrote {done.path}: kernel {done.shape} {done.dtype}, {done.tiles} tiles of {done.tile} rows "
                  f"({done.done_before} done before, {done.computed} computed by this process) in "
                  f"{done.seconds:.1f} s")
        return OK
    finally:
        if started:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ntkcheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true",
                        help="on an error during the work, show the traceback instead of one line "
                             "(also NTKCHECK_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("summary", parents=[common], help="compute kernels of a few MLPs on the available device "
                       "and report")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quick", action="store_true", help="the two small networks only")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.set_defaults(func=_summary, check=_check_summary, parser=p)
    v = sub.add_parser("verify", parents=[common],
                       help="run the property suite and write the claims report (the main job)",
                       description="Run the property suite and write <out>/claims-<device>-<dtype>.md. If no claim "
                                   "runs at all (a collection error, a -k selecting nothing), nothing is written "
                                   "and the exit status is 3.")
    v.add_argument("--profile", default="ci", choices=["dev", "ci", "ci-random", "thorough", "gpu"],
                   help="Hypothesis settings profile (default: ci)")
    v.add_argument("--device", default="cpu", help="cpu (default), cuda or auto (CUDA_VISIBLE_DEVICES picks the GPU)")
    v.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    v.add_argument("--out", default="reports", help="report folder (default: reports)")
    v.add_argument("--reproduce", action="store_true", help="also run the quick reproductions and link their reports")
    v.add_argument("--mutants", nargs="*", metavar="NAME", default=None,
                   help="also run the properties against each mutant of ntkcheck.testing.mutants (all, or the NAMEs "
                        "given) and report the mutation score; a surviving mutant makes the exit status 1")
    v.add_argument("--workers", type=int, default=1,
                   help="pytest-xdist worker processes for the property runs (default 1; more need pytest-xdist)")
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v.set_defaults(func=_verify, check=_check_verify, parser=v)
    r = sub.add_parser("reproduce", parents=[common],
                       help="rerun the seed papers' experiments and write reports/reproduce-<name>.md")
    r.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sizes for 2 CPU cores, minutes in total (default)")
    size.add_argument("--full", action="store_true", help="the papers' sizes, meant for a GPU")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    r.add_argument("--seed", type=int, default=0, help="seed of every random draw, in [0, 2**32 - 1] (default 0)")
    r.add_argument("--out", default="reports", help="report folder (default: reports)")
    r.set_defaults(func=_reproduce, check=_check_reproduce, parser=r)
    b = sub.add_parser("report", parents=[common],
                       help="benchmark report of a pytest-benchmark JSON run, against a baseline if given",
                       description="Benchmark report of a pytest-benchmark JSON run, against a baseline if given. "
                                   "Exit status: 0 no regression, 1 a regression, 3 an incomplete comparison "
                                   "(fewer than --min-compared of the baseline's benchmarks in the run), 2 a bad "
                                   "argument or input file.")
    b.add_argument("run", metavar="RUN.json", nargs="+",
                   help="the run (pytest --benchmark-json); several runs count by their best median per benchmark")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--baseline", metavar="BASELINE.json", action="append",
                       help="a stored run of the same machine kind (e.g. reports/baselines/<kind>.json); repeatable")
    where.add_argument("--baseline-dir", metavar="DIR",
                       help="use DIR/<machine kind of the run>.json as the baseline, or none if it does not exist")
    b.add_argument("--threshold", type=float, default=0.10,
                   help="slowdown of the median flagged as a regression, as a fraction in (0, 1] (default 0.10)")
    b.add_argument("--min-compared", type=float, default=0.9, metavar="FRACTION",
                   help="share of the baseline's benchmarks the run must contain for the comparison to pass, in "
                        "[0, 1] (default 0.9); below it the exit status is 3 and the missing ones are listed")
    b.add_argument("--out", default="reports", help="report folder (default: reports)")
    b.add_argument("--name", help="report name: <out>/<name>.md (default: bench-<RUN file stem>)")
    b.set_defaults(func=_report, check=_check_report, parser=b)
    k = sub.add_parser(
        "kernel", parents=[common], help="write the empirical NTK of a saved model to a .npy file, tile by tile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write ntk(model, INPUTS, X2) to --out (a .npy file) tile by tile within --memory-budget "
                    "(ntkcheck.ntk_to_file): the kernel need not fit in memory.\n\n"
                    "MODEL: a whole module saved with torch.save(model, path), e.g. an ntkcheck.MLP; it is unpickled "
                    "(load only files you trust) and put in eval mode. INPUTS, X2: a .npy file (np.save) or a .pt "
                    "file holding one tensor (torch.save), a batch (N, ...); floats are cast to --dtype, integer "
                    "token ids are kept.\n\n"
                    "An interrupted run leaves OUT.partial, OUT.tiles.json and OUT.tiles.npy; the same command "
                    "resumes it (other arguments are refused) and OUT appears only when complete. Under torchrun "
                    "(WORLD_SIZE > 1) the command initialises the process group itself (gloo on cpu, nccl on cuda, "
                    "one GPU per local rank) and the ranks share the tiles; they must share OUT's file system.")
    k.add_argument("model", metavar="MODEL", help="a module saved with torch.save(model, path)")
    k.add_argument("inputs", metavar="INPUTS", help="x1: a .npy or .pt file holding a batch (N1, ...)")
    k.add_argument("--x2", metavar="INPUTS2", help="x2: a .npy or .pt file (N2, ...) (default: the symmetric "
                   "kernel of INPUTS)")
    k.add_argument("--out", required=True, metavar="K.npy", help="the .npy file to write")
    k.add_argument("--memory-budget", metavar="SIZE",
                   help="memory the run may hold, e.g. 64MiB, 2GiB (default: half the device's free memory)")
    k.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    k.add_argument("--dtype", choices=["float64", "float32"], help="of the model and the kernel (default: the "
                   "model's)")
    k.add_argument("--output", choices=["full", "trace", "sum"], default="full",
                   help="full (N1, N2, O, O) (default; (N1, N2) for one output), trace or sum, as in ntkcheck.ntk")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_kernel, check=_check_kernel, parser=k)
    return parser


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] + (" ..." if len(lines) > 1 else "") if lines else "(no message)"
    return f"{type(exc).__name__}: {text}"


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
        print(f"{args.parser.prog}: error: {_one_line(exc)} (--traceback shows where)", file=sys.stderr)
        return INCONCLUSIVE


if __name__ == "__main__":
    sys.exit(main())
