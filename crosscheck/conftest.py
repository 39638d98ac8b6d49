"""The neural-tangents worker (one process for the session) and the per-family report of the worst errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_nt_worker.py")

WORST: dict[str, tuple[float, float, float, float, str]] = {}
"""family -> worst relative errors (NNGP, NTK; their diagonals when x2 is None) and the worst NTK case's model."""


def nt_python() -> str | None:
    """The python with neural-tangents named by ``NTKCHECK_NT_PYTHON``, or None if unset or not executable."""
    path = os.environ.get("NTKCHECK_NT_PYTHON", "")
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


class NeuralTangents:
    """A neural-tangents worker process: :meth:`kernels` sends one request (see ``_nt_worker.py``)."""

    def __init__(self, python: str) -> None:
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "OMP_NUM_THREADS": "1",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        }
        self.process = subprocess.Popen(
            [python, "-u", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def kernels(self, layers: list[dict], x1: list, x2: list | None) -> tuple[list, list]:
        """``(nngp, ntk)`` of the stax network ``layers`` on channel-last inputs (nested lists)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"layers": layers, "x1": x1, "x2": x2}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            err = self.process.stderr.read() if self.process.stderr is not None else ""
            raise RuntimeError(f"the neural-tangents worker exited: {err[-2000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"neural-tangents refused {layers}: {reply['error']}")
        return reply["nngp"], reply["ntk"]

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def neural_tangents() -> Iterator[NeuralTangents]:
    python = nt_python()
    if python is None:
        given = os.environ.get("NTKCHECK_NT_PYTHON")
        why = f"NTKCHECK_NT_PYTHON={given!r} is not an executable file" if given else "NTKCHECK_NT_PYTHON is not set"
        pytest.skip(
            f"no python with neural-tangents configured ({why}): set NTKCHECK_NT_PYTHON to one, or run "
            "`tox -e crosscheck` with NT_ENV_SCRIPT naming neural-tangents-env.sh to build it"
        )
    worker = NeuralTangents(python)
    yield worker
    worker.close()


@pytest.fixture(scope="session")
def report() -> Callable[..., None]:
    """``report(family, nngp, ntk, nngp_diagonal, ntk_diagonal, arch)`` keeps the worst errors for the summary."""
    return record


def record(family: str, nngp: float, ntk: float, nngp_diagonal: float, ntk_diagonal: float, arch: str) -> None:
    """Keep the worst errors per family for the terminal summary."""
    old = WORST.get(family, (0.0, 0.0, 0.0, 0.0, ""))
    WORST[family] = (
        max(old[0], nngp),
        max(old[1], ntk),
        max(old[2], nngp_diagonal),
        max(old[3], ntk_diagonal),
        arch if ntk >= old[1] else old[4],
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not WORST:
        return
    terminalreporter.section("ntkcheck against neural-tangents: worst relative errors (max|a - b| / max|b|)")
    for family, (nngp, ntk, nngp_diag, ntk_diag, arch) in sorted(WORST.items()):
        terminalreporter.write_line(
            f"{family:<24} nngp {nngp:.2e}  ntk {ntk:.2e}  (x2=None diagonal: nngp "
            f"{nngp_diag:.2e}, ntk {ntk_diag:.2e})  worst ntk: {arch}"
        )
