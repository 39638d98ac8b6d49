"""neural-tangents timings, run by a Python with neural-tangents 0.6.5 and JAX (no torch): a worker process.

Started by ``benchmarks/test_neural_tangents.py`` as ``NT_PYTHON _nt_runner.py``; it reads one JSON
request per line on stdin and answers one JSON line on stdout:

* ``{"op": "setup", "spec": {...}, "arrays": "file.npz"}`` builds the stax network of the spec
  (``family`` mlp or cnn, ``widths``, ``outputs``, ``weight_std``, ``bias_std``; ``kind``
  ``"empirical"`` with ``implementation`` ``"jacobian_contraction"`` or
  ``"structured_derivatives"``, or ``"analytic"``), loads the parameters and inputs from the
  .npz (layouts of ``_families.nt_arrays``), jit-compiles the kernel function and calls it
  twice (compilation, then a warm call); answers the compile time, the warm call's times and
  the kernel's top-left ``check_rows`` block (for the cross-check against ntkcheck).
* ``{"op": "run"}`` times one more call: ``{"cpu_s": process CPU time, "wall_s": wall time}``.
* ``{"op": "quit"}`` ends the worker.

Settings for a fair single-thread comparison (set before JAX is imported): XLA's Eigen
thread pool off and one intra-op thread (``XLA_FLAGS``), ``jax.jit`` of the kernel
function, ``vmap_axes=0`` for the empirical kernels, and the second call timed.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import sys
import time
import types

# neural-tangents 0.6.5 imports a module that later JAX releases removed
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax  # noqa: E402

# float32 throughout, as the ntkcheck side (64-bit mode off: JAX's default)
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

IMPLEMENTATIONS = {
    "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "structured_derivatives": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
}


def network(spec: dict):
    """``(apply_fn, kernel_fn, n_param_layers)`` of the spec's stax network (NTK parametrization, ReLU)."""
    w_std, b_std = float(spec["weight_std"]), float(spec["bias_std"])
    layers = []
    if spec["family"] == "mlp":
        for width in spec["widths"]:
            layers += [stax.Dense(width, W_std=w_std, b_std=b_std, parameterization="ntk"), stax.Relu()]
    elif spec["family"] == "cnn":
        for width in spec["widths"]:
            layers += [
                stax.Conv(width, (3, 3), padding="SAME", W_std=w_std, b_std=b_std, parameterization="ntk"),
                stax.Relu(),
            ]
        layers.append(stax.GlobalAvgPool())
    else:
        raise ValueError(f"spec family must be mlp or cnn, got {spec['family']!r}")
    layers.append(stax.Dense(int(spec["outputs"]), W_std=w_std, b_std=b_std, parameterization="ntk"))
    _, apply_fn, kernel_fn = stax.serial(*layers)
    return apply_fn, kernel_fn, len(spec["widths"]) + 1


def params_from(arrays: dict, n_layers: int, family: str) -> list:
    """stax.serial's parameter list: (W, b) per Dense/Conv, () per parameterless layer."""
    params: list = []
    for i in range(n_layers):
        w, b = jax.numpy.asarray(arrays[f"W{i}"]), jax.numpy.asarray(arrays[f"b{i}"])
        b = b.reshape(1, 1, 1, -1) if i < n_layers - 1 and family == "cnn" else b.reshape(1, -1)
        params.append((w, b))
        if i < n_layers - 1:
            params.append(())  # Relu
    if family == "cnn":
        params.insert(len(params) - 1, ())  # GlobalAvgPool before the readout
    return params


def timed(fn) -> tuple[object, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.process_time() - c0, time.perf_counter() - w0


def setup(spec: dict, arrays_path: str):
    """The zero-argument call to time, and the setup answer."""
    arrays = dict(np.load(arrays_path))
    apply_fn, kernel_fn, n_layers = network(spec)
    x = jax.numpy.asarray(arrays["x"])
    if spec["kind"] == "analytic":
        fn = jax.jit(kernel_fn, static_argnames="get")
        call = lambda: fn(x, None, "ntk")  # noqa: E731
    else:
        params = params_from(arrays, n_layers, spec["family"])
        ntk_fn = jax.jit(
            nt.empirical_ntk_fn(
                apply_fn, trace_axes=(), vmap_axes=0, implementation=IMPLEMENTATIONS[spec["implementation"]]
            )
        )
        call = lambda: ntk_fn(x, None, params)  # noqa: E731
    _, compile_cpu, compile_wall = timed(call)
    out, cpu, wall = timed(call)
    k = np.asarray(out, dtype=np.float64)
    rows = int(spec.get("check_rows", 8))
    head = k[:rows, :rows].reshape(min(rows, k.shape[0]), min(rows, k.shape[1]), -1)
    answer = {
        "compile_cpu_s": compile_cpu,
        "compile_wall_s": compile_wall,
        "warm_cpu_s": cpu,
        "warm_wall_s": wall,
        "shape": list(k.shape),
        "kernel_head": head.tolist(),
        "dtype": str(np.asarray(out).dtype),
        "jax": jax.__version__,
        "neural_tangents": getattr(nt, "__version__", "unknown"),
        "xla_flags": os.environ["XLA_FLAGS"],
    }
    return call, answer


def main() -> None:
    call = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "setup":
                call, answer = setup(request["spec"], request["arrays"])
            elif request["op"] == "run":
                if call is None:
                    raise RuntimeError("run before setup")
                _, cpu, wall = timed(call)
                answer = {"cpu_s": cpu, "wall_s": wall}
            elif request["op"] == "quit":
                return
            else:
                raise ValueError(f"unknown op {request['op']!r}")
        except Exception as exc:  # reported to the parent, which fails the test with it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
