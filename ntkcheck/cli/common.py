"""What every ``ntkcheck`` command shares: exit statuses, the one-line-error parser, argument checks.

Each argument check takes the text given and the subcommand's parser, and calls
``parser.error`` (exit status 2, one line) on a bad value.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import NoReturn

import torch

OK, FAILED, USAGE, INCONCLUSIVE, INTERRUPTED = 0, 1, 2, 3, 130
_DEVICE = re.compile(r"cpu|auto|cuda(?::(\d+))?")


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``<prog>: error: <message>``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def one_line(exc: BaseException) -> str:
    """``ExceptionType: first line of the message`` (`` ...`` when the message has more lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] + (" ..." if len(lines) > 1 else "") if lines else "(no message)"
    return f"{type(exc).__name__}: {text}"


def parse_device(text: str, parser: argparse.ArgumentParser, *, indexed: bool = True) -> str:
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
            parser.error(
                f"--device {text}: no CUDA device is available (torch {torch.__version__}); use --device cpu or auto"
            )
        if match.group(1) is not None and not indexed:
            parser.error(
                f"--device {text}: the property suite runs on cpu or cuda; choose the GPU with "
                f"CUDA_VISIBLE_DEVICES={match.group(1)} and --device cuda"
            )
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            parser.error(f"--device {text}: there are {count} CUDA devices, cuda:0 to cuda:{count - 1}")
    return text


def parse_out_folder(text: str, parser: argparse.ArgumentParser) -> Path:
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
