"""neural-tangents (JAX) timings in the same run as ntkcheck's, on the same networks, weights and inputs.

Skipped unless ``NTKCHECK_NT_PYTHON`` names a Python that imports neural-tangents 0.6.5 on JAX 0.4.23
(``tox -e bench-nt`` builds one with the script ``NT_ENV_SCRIPT`` names); that
Python has no torch, so a worker process (``_nt_runner.py``) runs neural-tangents and times its
calls itself.  Settings for a fair comparison with one torch thread: XLA's Eigen pool off and one
intra-op thread, ``jax.jit``, ``vmap_axes=0`` for the empirical kernels, compile and one warm call
before timing.

Cases share their ids with ``test_family_kernels.py`` (empirical) and ``test_analytic_kernels.py``
(analytic), so ``ntkcheck report`` puts them side by side (``extra_info["case"]``):

* empirical NTK of the MLP and the CNN, neural-tangents' ``JACOBIAN_CONTRACTION`` and
  ``STRUCTURED_DERIVATIVES`` implementations, with the ntkcheck network's own weights;
* the analytic (infinite-width) NTK of the same MLP and CNN, stax ``kernel_fn``.

Before timing, neural-tangents' kernel (its top-left 8 x 8 block) must agree with ntkcheck's
(``ntkcheck.ntk`` / ``ntkcheck.analytic_ntk``) to 1e-4 relative: two independent implementations of
the same kernel.  The timings are the worker's clock around each call: its process CPU time when
this run's timer is ``time.process_time`` (as in ``tox -e bench-cpu``), else its wall time; they
reach pytest-benchmark through the ``benchmark`` marker's ``timer`` (:func:`worker_clock`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _cases import FamilyCase
from _families import build, nt_arrays
from _measure import calibrated_rounds
from conftest import ROUND_BUDGET_S, size_set

import ntkcheck as nk

RUNNER = Path(__file__).with_name("_nt_runner.py")
NT_PYTHON = os.environ.get("NTKCHECK_NT_PYTHON") or None
IMPLEMENTATIONS = ("structured_derivatives", "jacobian_contraction")
SLOW_CALL_S = 5.0
"""A call slower than this is timed once (after the warm call), not the usual three or more rounds."""

SMOKE = dict(n=4, width=4, depth=1, image=6, d=4)
EMPIRICAL = {
    "smoke": [FamilyCase("mlp", **SMOKE), FamilyCase("cnn", **{**SMOKE, "depth": 2})],
    "cpu": [FamilyCase("mlp", 1024, 512, 3), FamilyCase("cnn", 128, 32, 3)],
}
ANALYTIC = {
    "smoke": [FamilyCase("mlp", **SMOKE), FamilyCase("cnn", **{**SMOKE, "depth": 2})],
    "cpu": [FamilyCase("mlp", 1024, 512, 3), FamilyCase("cnn", 32, 32, 3)],
}
SIZES = "cpu" if size_set() == "gpu" else size_set()  # neural-tangents runs on the CPU (jax[cpu]) here


def _skip_reason() -> str | None:
    if NT_PYTHON is None:
        return "NTKCHECK_NT_PYTHON is not set (a Python with neural-tangents 0.6.5; tox -e bench-nt builds one)"
    if not os.access(NT_PYTHON, os.X_OK):
        return f"NTKCHECK_NT_PYTHON={NT_PYTHON!r} is not an executable"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


class Worker:
    """The neural-tangents worker process: one JSON request per line in, one JSON answer per line out."""

    def __init__(self, python: str, log: Path) -> None:
        self.log = log
        self._stderr = open(log, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [python, str(RUNNER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )

    def ask(self, request: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"the neural-tangents worker ({NT_PYTHON}) exited; its stderr ends with:\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"neural-tangents worker: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"op": "quit"})
            except (RuntimeError, BrokenPipeError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(NT_PYTHON, tmp_path_factory.mktemp("nt") / "worker-stderr.txt")  # type: ignore[arg-type]
    yield w
    w.close()


_CLOCK = [0.0]


def worker_clock() -> float:
    """Seconds of neural-tangents work timed so far by the worker (advanced by each timed call)."""
    return _CLOCK[0]


def _uses_cpu_time(config) -> bool:
    return "process_time" in str(config.getoption("benchmark_timer", default=""))


def _spec(case: FamilyCase, kind: str, implementation: str | None) -> dict:
    return dict(
        family=case.family,
        widths=[case.width] * case.depth,
        outputs=case.outputs,
        weight_std=1.0,
        bias_std=0.1,
        kind=kind,
        implementation=implementation,
        check_rows=8,
    )


def _run(
    benchmark, worker, request, tmp_path, case: FamilyCase, kind: str, implementation: str | None, reference
) -> None:
    """Set the worker up for this case, check its kernel against ``reference(model, x, rows)``, time it."""
    model, x = build(case, torch.device("cpu"))
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, **nt_arrays(model, x, case))
    setup = worker.ask({"op": "setup", "spec": _spec(case, kind, implementation), "arrays": str(arrays)})
    head = np.asarray(setup["kernel_head"], dtype=np.float64)
    rows = head.shape[0]
    ours = reference(model, x, rows).double().reshape(head.shape).numpy()
    err = float(np.linalg.norm(head - ours) / np.linalg.norm(ours))
    assert err < 1e-4, (
        f"neural-tangents {kind} {implementation or ''} kernel of {case.id} is off from ntkcheck's by {err:.3g}"
    )
    cpu = _uses_cpu_time(request.config)
    per_call = setup["warm_cpu_s" if cpu else "warm_wall_s"]

    def call() -> None:
        answer = worker.ask({"op": "run"})
        _CLOCK[0] += answer["cpu_s" if cpu else "wall_s"]

    min_rounds = 1 if per_call > SLOW_CALL_S else 3
    rounds = calibrated_rounds(per_call, ROUND_BUDGET_S[size_set()], min_rounds=min_rounds)
    benchmark.pedantic(call, rounds=rounds, iterations=1)
    if benchmark.stats is None:
        return
    prefix = "analytic-" if kind == "analytic" else ""
    benchmark.extra_info.update(
        family=case.family,
        case=prefix + case.id,
        library="neural-tangents",
        method=implementation if kind == "empirical" else "kernel_fn",
        n=case.n,
        width=case.width,
        depth=case.depth,
        dtype=case.dtype,
        compile_s=setup["compile_cpu_s" if cpu else "compile_wall_s"],
        warm_call_s=per_call,
        jax=setup["jax"],
        neural_tangents=setup["neural_tangents"],
        xla_flags=setup["xla_flags"],
        worker_clock="process CPU time" if cpu else "wall time",
        max_relative_difference_to_ntkcheck=err,
    )


EMPIRICAL_PARAMS = [pytest.param(c, impl, id=f"{impl}-{c.id}") for c in EMPIRICAL[SIZES] for impl in IMPLEMENTATIONS]


@pytest.mark.benchmark(timer=worker_clock)
@pytest.mark.parametrize("case,implementation", EMPIRICAL_PARAMS)
def test_nt_empirical(benchmark, worker, request, tmp_path, case: FamilyCase, implementation: str):
    _run(
        benchmark,
        worker,
        request,
        tmp_path,
        case,
        "empirical",
        implementation,
        lambda model, x, rows: nk.ntk(model, x[:rows]),
    )


@pytest.mark.benchmark(timer=worker_clock)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ANALYTIC[SIZES]])
def test_nt_analytic(benchmark, worker, request, tmp_path, case: FamilyCase):
    _run(
        benchmark,
        worker,
        request,
        tmp_path,
        case,
        "analytic",
        None,
        lambda model, x, rows: nk.analytic_ntk(model, x[:rows]),
    )
