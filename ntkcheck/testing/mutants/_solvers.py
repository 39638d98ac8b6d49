"""Mutants of the solvers area (``ntkcheck.dynamics.solvers``: seed 000 eqs (4)-(6), Thm 2/5/6; see the package
docstring).

Each is a slip a maintainer of the kernel solvers could make: a regularised or truncated inverse
where the exact one is meant, a sign or a target mixed up in the decomposition, a non-minimal
parameter solution, an output-major / sample-major mix-up of block kernels.  The properties of
``decomposition_identity``, ``init_error_decomposition`` and ``rkhs_norm`` must kill every one.
"""

from __future__ import annotations

import dataclasses

import torch

from ntkcheck.testing.mutants import Mutant


def _ridge(original):
    def init(self, K, pinv_rcond, max_cond, name="k_train"):
        lam_max = float(torch.linalg.eigvalsh(K)[-1])
        original(
            self, K + 1e-9 * lam_max * torch.eye(K.shape[0], dtype=K.dtype, device=K.device), pinv_rcond, max_cond, name
        )

    return init


def _truncated(original):
    def init(self, K, pinv_rcond, max_cond, name="k_train"):
        original(self, K, 1e-3 if pinv_rcond is None else pinv_rcond, max_cond, name)

    return init


def _cholesky_upper(original):
    def solve(self, rhs):
        if self.chol is not None:
            return torch.cholesky_solve(rhs, self.chol, upper=True)
        return original(self, rhs)

    return solve


def _float32_solve(original):
    def solve(self, rhs):
        if self.chol is not None:
            return torch.cholesky_solve(rhs.float(), self.chol.float()).to(rhs.dtype)
        return original(self, rhs)

    return solve


def _init_bias_sign(original):
    def decompose(*args, **kwargs):
        d = original(*args, **kwargs)
        return dataclasses.replace(d, init_bias=d.fit_of_init - d.h_ini)

    return decompose


def _fit_of_targets(original):
    def decompose(*args, **kwargs):
        d = original(*args, **kwargs)
        return dataclasses.replace(d, fit_of_init=d.unbiased, init_bias=d.h_ini - d.unbiased)

    return decompose


def _drops_h_ini_test(original):
    def interpolate(k_train, y_train, *, k_test_train=None, h_ini_train=None, h_ini_test=None, **kwargs):
        out = original(
            k_train, y_train, k_test_train=k_test_train, h_ini_train=h_ini_train, h_ini_test=h_ini_test, **kwargs
        )
        return out if h_ini_test is None else out - h_ini_test

    return interpolate


def _null_component(original):
    def min_norm_parameters(jacobian, residual, *, max_cond=None):
        delta = original(jacobian, residual, max_cond=max_cond)
        J = jacobian.reshape(-1, jacobian.shape[-1])
        g = torch.ones_like(delta)
        null = g - J.T @ torch.linalg.solve(J @ J.T, J @ g)
        return delta + 0.1 * delta.norm() * null / null.norm().clamp_min(torch.finfo(delta.dtype).tiny)

    return min_norm_parameters


def _output_major(original):
    def _kernel_matrix(k, name="k_train"):
        if isinstance(k, torch.Tensor) and k.ndim == 4:
            n, o = k.shape[0], k.shape[2]
            k = k.permute(2, 0, 3, 1).reshape(o * n, o * n)
        return original(k, name)

    return _kernel_matrix


def _test_kernel_unpermuted(original):
    def _problem(k_train, y_train, k_test_train=None, h_ini_train=None, h_ini_test=None):
        p = original(k_train, y_train, k_test_train, h_ini_train, h_ini_test)
        if p.Kx is not None and k_test_train.ndim == 4:
            m, n, o = k_test_train.shape[0], k_test_train.shape[1], k_test_train.shape[2]
            p = p._replace(Kx=k_test_train.reshape(m * o, n * o))
        return p

    return _problem


MUTANTS: list[Mutant] = [
    Mutant(
        "interpolate_ridge_1e-9",
        "the kernel solve adds a ridge 1e-9 lambda_max I to K (kernel ridge regression, not the interpolant "
        "of seed 000 eq (5)): the result no longer fits Y exactly",
        "ntkcheck.dynamics._inverse:_Inverse.__init__",
        _ridge,
    ),
    Mutant(
        "interpolate_truncated_pinv",
        "the kernel solve uses a pseudo-inverse that drops eigenvalues below 1e-3 lambda_max instead of the "
        "Cholesky inverse (a default pinv_rcond=1e-3)",
        "ntkcheck.dynamics._inverse:_Inverse.__init__",
        _truncated,
    ),
    Mutant(
        "cholesky_solve_upper",
        "cholesky_solve is told the lower Cholesky factor is upper: it solves (L^T L) alpha = r, not K alpha = r",
        "ntkcheck.dynamics._inverse:_Inverse.solve",
        _cholesky_upper,
    ),
    Mutant(
        "cholesky_solve_float32",
        "the triangular solves run in float32 whatever the kernel's dtype (a speed shortcut): float64 "
        "interpolants keep only ~1e-7 cond(K) relative accuracy",
        "ntkcheck.dynamics._inverse:_Inverse.solve",
        _float32_solve,
    ),
    Mutant(
        "decompose_init_bias_sign",
        "decompose returns init_bias = h_k(.; 0, X, h_ini(X)) - h_ini, the sign of seed 000 eq (6)'s last term flipped",
        "ntkcheck.dynamics.solvers:decompose",
        _init_bias_sign,
    ),
    Mutant(
        "decompose_fit_of_targets",
        "decompose fits the training targets Y instead of h_ini(X) in the init term: fit_of_init = "
        "h_k(.; 0, X, Y), init_bias = h_ini - h_k(.; 0, X, Y)",
        "ntkcheck.dynamics.solvers:decompose",
        _fit_of_targets,
    ),
    Mutant(
        "interpolate_drops_h_ini_test",
        "interpolate forgets to add h_ini at the test points: returns k(T, X) K^{-1} (Y - h_ini(X))",
        "ntkcheck.dynamics.solvers:interpolate",
        _drops_h_ini_test,
    ),
    Mutant(
        "min_norm_parameters_null_component",
        "min_norm_parameters returns a displacement with a component in the null space of J (a start "
        "vector not projected out): it still fits Y but is not the minimum-norm solution of seed 000 eq (4)",
        "ntkcheck.dynamics.solvers:min_norm_parameters",
        _null_component,
    ),
    Mutant(
        "kernel_matrix_output_major",
        "(n, n, O, O) kernels are flattened output-major (row a n + i) while targets stay sample-major (row i O + a)",
        "ntkcheck.dynamics._kernel_checks:_kernel_matrix",
        _output_major,
    ),
    Mutant(
        "kernel_test_train_unpermuted",
        "the (m, n, O, O) test-train kernel is reshaped to (m O, n O) without the permute: rows and columns "
        "mix samples and outputs",
        "ntkcheck.dynamics._problem:_problem",
        _test_kernel_unpermuted,
    ),
]
