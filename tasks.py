#!/usr/bin/env python3
"""Set up a virtual environment and run one of ntkcheck's jobs, with nothing but python3.

    python3 tasks.py main    # set up, then run the main job (`ntkcheck verify`: the claims report)
    python3 tasks.py test    # set up, then run the test suite (pytest)
    python3 tasks.py bench   # set up, then run the benchmarks
    python3 tasks.py check   # set up, then run the gates: ruff, mypy, import-linter, the docs build

The environment lives in ``.venv``.  torch is pinned to 2.13.0 unless the
interpreter already provides torch >= 2.4 (the venv sees system packages), so a
machine with its own CUDA build of torch keeps it.  Extra arguments after the
job name go to the command it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH_PIN = "torch==2.13.0"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(*cmd: str | os.PathLike) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def _has_torch(python: Path) -> bool:
    probe = (
        "import torch, sys; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); "
        "sys.exit(0 if v >= (2, 4) else 1)"
    )
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def setup(extras: str = "test,data") -> Path:
    """Create .venv (once) and install ntkcheck with ``extras`` into it."""
    python = _python()
    if not python.exists():
        venv.EnvBuilder(with_pip=True, system_site_packages=True).create(VENV)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not _has_torch(python):
        _run(*pip, TORCH_PIN)
    _run(*pip, "-e", f"{ROOT}[{extras}]")
    return python


GATES = (
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["mypy"],
    ["lint-imports"],
    ["mkdocs", "build", "--strict", "--site-dir", "site"],
)


def _check(python: Path) -> int:
    """Run every gate (the venv's console scripts), each to the end; the exit status is 1 when any failed."""
    failed = []
    for tool, *args in GATES:
        gate = [str(python.parent / tool), *args]
        print("+", tool, *args, flush=True)
        if subprocess.run(gate, cwd=ROOT).returncode != 0:
            failed.append(" ".join([tool, *args]))
    for gate in failed:
        print(f"FAILED: {gate}", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    jobs = {
        "main": ["-m", "ntkcheck.cli", "verify"],
        "test": ["-m", "pytest", "-p", "no:cacheprovider", "--benchmark-disable"],
        "bench": [
            "-m",
            "pytest",
            "benchmarks",
            "-p",
            "no:cacheprovider",
            "--benchmark-json",
            str(ROOT / "reports" / "bench.json"),
        ],
    }
    if argv and argv[0] == "check":
        return _check(setup("test,data,check"))
    if not argv or argv[0] not in jobs:
        print(__doc__)
        return 2
    python = setup()
    env = dict(os.environ)
    if argv[0] == "test":
        env.setdefault("NTKCHECK_BENCH_SIZES", "smoke")  # benchmark files run once each, tiny sizes
        env.setdefault("NTKCHECK_PROFILE", "dev")  # the Hypothesis profile of the ntkcheck plugin (.ci/run: ci)
    return subprocess.run([str(python), *jobs[argv[0]], *argv[1:]], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
