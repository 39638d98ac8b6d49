"""ntkcheck.dynamics.gp against neural-tangents' ``predict.gp_inference`` and ``predict.gradient_descent_mse_ensemble``.

Both sides receive the SAME float64 kernel matrices (ntkcheck's analytic NNGP and NTK of an MLP
on n training and m test inputs), so only the inference is compared, not the kernels.  The
neural-tangents side runs in the python named by ``NTKCHECK_NT_PYTHON`` (a subprocess; the
matrices travel in .npz files; the script is :data:`NT_SCRIPT`, which imports neither torch nor
ntkcheck); the test skips, saying why, when that variable is unset or names no executable.

neural-tangents gets the kernels through a ``kernel_fn`` that looks them up by index: the
"inputs" are the row numbers of the joint (train + test) matrices.  Conventions mapped (see
:mod:`ntkcheck.dynamics.gp`): ``learning_rate = 2 O lr`` at the same ``t`` (its loss is ``(1/2) mean``
over the ``n O`` targets, ours ``(1/n) sum``); ``t = inf`` is its ``t=None`` (Cholesky path)
and ``t=inf`` (eigen path); ``diag_reg`` and ``diag_reg_absolute_scale`` are passed as they
are; ``get='nngp'`` is ``ensemble_predict(K, Y, k_test_train=K*X)`` (the NNGP kernel trains) and
``gp_inference``, ``get='ntk'`` is ``ensemble_predict(Theta, Y, k_test_train=Theta*X, nngp_train=K,
nngp_test_train=K*X)``.

Tolerance: ``max|ntkcheck - nt| / max|nt| <= RTOL = 1e-8`` for every mean and covariance, at
each time.  Kernels of condition number ~1e2-1e3: both sides' rounding is ~cond * n * eps ~ 1e-12;
the gap to 1e-8 leaves room for the two sides' different factorisations (Cholesky vs eigh).
Run with ``NTKCHECK_NT_PYTHON=/path/to/python pytest crosscheck/test_gp_against_neural_tangents.py -s``
to see the worst errors.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkcheck as nk
from ntkcheck.dynamics.gp import ensemble_predict, gp_inference

D = torch.float64
RTOL = 1e-8
TIMES = [0.05, 0.7, 4.0, 60.0]

NT_SCRIPT = r'''
import collections, sys, types
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import neural_tangents as nt

inp = np.load(sys.argv[1])
K, T, y = inp["nngp"], inp["ntk"], inp["y"]  # joint (n+m) x (n+m) kernels, targets (n, O)
n = y.shape[0]
N = K.shape[0]
times = inp["times"]
lr = float(inp["learning_rate"])
reg = float(inp["diag_reg"])
absolute = bool(inp["absolute"])
Kernel = collections.namedtuple("Kernel", "nngp ntk")


def kernel_fn(x1, x2, get):
    """The kernels looked up by index: an "input" is the row number in the joint matrices."""
    i = np.asarray(x1)[:, 0].astype(int)
    j = i if x2 is None else np.asarray(x2)[:, 0].astype(int)
    pick = {"nngp": K[np.ix_(i, j)], "ntk": T[np.ix_(i, j)]}
    if isinstance(get, str):
        return pick[get]
    return Kernel(**{g: pick.get(g) if g in get else None for g in ("nngp", "ntk")})


x_train = np.arange(n, dtype=np.float64)[:, None]
x_test = np.arange(n, N, dtype=np.float64)[:, None]
out = {}
gp = nt.predict.gp_inference(Kernel(K[:n, :n], T[:n, :n]), y, diag_reg=reg, diag_reg_absolute_scale=absolute)
ens = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, learning_rate=lr, diag_reg=reg,
                                               diag_reg_absolute_scale=absolute)
for g in ("nngp", "ntk"):
    r = gp(get=g, k_test_train=Kernel(K[n:, :n], T[n:, :n]), k_test_test=Kernel(K[n:, n:], None))
    out[f"gp_{g}_mean"], out[f"gp_{g}_cov"] = np.asarray(r.mean), np.asarray(r.covariance)
    for label, t in (("t", times), ("none", None), ("inf", np.inf)):
        r = ens(t=t, x_test=x_test, get=g, compute_cov=True)
        out[f"ens_{g}_{label}_mean"], out[f"ens_{g}_{label}_cov"] = np.asarray(r.mean), np.asarray(r.covariance)
np.savez(sys.argv[2], **out)
'''


def _nt_python() -> str:
    path = os.environ.get("NTKCHECK_NT_PYTHON", "")
    if not path:
        pytest.skip(
            "NTKCHECK_NT_PYTHON is not set: set it to a python with neural-tangents 0.6.5 "
            "(built by neural-tangents-env.sh) to compare ntkcheck.dynamics.gp with neural_tangents.predict"
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"NTKCHECK_NT_PYTHON={path!r} is not an executable file")
    return path


def _run_nt(python: str, tmp: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    script, src, dst = tmp / "nt_gp.py", tmp / "in.npz", tmp / "out.npz"
    script.write_text(NT_SCRIPT)
    np.savez(src, **arrays)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "OMP_NUM_THREADS": "1",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    }
    done = subprocess.run(
        [python, str(script), str(src), str(dst)], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"the neural-tangents side failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    with np.load(dst) as f:
        return {k: f[k] for k in f.files}


def _kernels(activation: str, out: int, seed: int, n: int = 10, m: int = 5, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, d, generator=g, dtype=D)
    model = nk.MLP(d, [16], 1, activation=activation, weight_std=1.3, bias_std=0.2, generator=g, dtype=D)
    K, T = nk.analytic_nngp(model, x), nk.analytic_ntk(model, x)
    y = torch.randn(n, out, generator=g, dtype=D)
    return K, T, y


def _rel(ours: torch.Tensor, theirs: np.ndarray, what: str) -> float:
    a = ours.detach().numpy()
    assert a.shape == theirs.shape, f"{what}: shape {a.shape} (ntkcheck) != {theirs.shape} (neural-tangents)"
    err = float(np.abs(a - theirs).max() / np.abs(theirs).max())
    assert err <= RTOL, f"{what}: max|ntkcheck - nt| / max|nt| = {err:.3e} > {RTOL:g}"
    return err


CASES = {
    "relu, 2 outputs, lr 0.7": dict(activation="relu", out=2, seed=0, lr=0.7, diag_reg=0.0, absolute=False),
    "erf, 3 outputs, diag_reg 1e-3 (relative)": dict(
        activation="erf", out=3, seed=1, lr=1.0, diag_reg=1e-3, absolute=False
    ),
    "relu, 1 output, diag_reg 0.02 (absolute), lr 2.5": dict(
        activation="relu", out=1, seed=2, lr=2.5, diag_reg=0.02, absolute=True
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gp_and_ensemble_equal_neural_tangents(name, tmp_path):
    python = _nt_python()
    case = CASES[name]
    K, T, y = _kernels(case["activation"], case["out"], case["seed"])
    n = y.shape[0]
    lr, reg, absolute = case["lr"], case["diag_reg"], case["absolute"]
    nt = _run_nt(
        python,
        tmp_path,
        dict(
            nngp=K.numpy(),
            ntk=T.numpy(),
            y=y.numpy(),
            times=np.asarray(TIMES),
            learning_rate=2 * y.shape[1] * lr,
            diag_reg=reg,
            absolute=absolute,
        ),
    )
    nngp = (K[:n, :n], K[n:, :n], K[n:, n:])
    ntk = (T[:n, :n], T[n:, :n])
    kw = dict(lr=lr, diag_reg=reg, diag_reg_absolute_scale=absolute)
    worst: dict[str, float] = {}

    def check(key: str, ours: torch.Tensor, what: str) -> None:
        worst[what] = max(worst.get(what, 0.0), _rel(ours, nt[key], f"{name}: {what} vs {key}"))

    post = gp_inference(
        nngp[0], y, k_test_train=nngp[1], k_test_test=nngp[2], diag_reg=reg, diag_reg_absolute_scale=absolute
    )
    assert post.covariance is not None
    check("gp_nngp_mean", post.mean, "nngp mean, t=inf")
    check("gp_nngp_cov", post.covariance, "nngp cov, t=inf")
    for g, kernel in (("nngp", None), ("ntk", ntk)):
        prior = {} if kernel is None else {"nngp_train": nngp[0], "nngp_test_train": nngp[1]}
        train, train_x = (nngp[0], nngp[1]) if kernel is None else kernel
        r = ensemble_predict(
            train, y, k_test_train=train_x, **prior, nngp_test_test=nngp[2], times=TIMES + [math.inf], **kw
        )
        assert r.covariance is not None
        check(f"ens_{g}_t_mean", r.mean[:-1], f"{g} mean, finite t")
        check(f"ens_{g}_t_cov", r.covariance[:-1], f"{g} cov, finite t")
        for label in ("none", "inf"):
            check(f"ens_{g}_{label}_mean", r.mean[-1], f"{g} mean, t=inf")
            check(f"ens_{g}_{label}_cov", r.covariance[-1], f"{g} cov, t=inf")
        if g == "ntk":
            check("gp_ntk_mean", r.mean[-1], "ntk mean, t=inf")
            check("gp_ntk_cov", r.covariance[-1], "ntk cov, t=inf")
    print(f"\n{name}: worst max|ntkcheck - nt| / max|nt|: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
