"""Iterative and out-of-core kernel solvers: CG interpolant, Krylov MSE flow, blocked Cholesky.

The kernel may be anything :func:`ntkcheck.kernels.kernel_operator.as_kernel_operator` accepts: an
:class:`~ntkcheck.kernels.operator.NTKOperator` (the empirical NTK, never formed), a dense torch
tensor (N, N) or (n, n, O, O), a numpy array or file-backed ``np.memmap``, or a scipy
``LinearOperator``.  Conventions are those of :mod:`ntkcheck.dynamics.solvers` and
:mod:`ntkcheck.dynamics.flows`: MSE ``(1/n) sum |h - y|^2`` (n samples), rate ``c = 2 lr / n``, and the
ridge ``diag_reg``: the solvers use ``K + mu I`` with ``mu = diag_reg * mean(diag K)``
(``= diag_reg * trace(K) / N``, neural-tangents' relative scale), while predictions use K
itself (kernel ridge regression).  Computation is in float64 (on the device of an operator or
a tensor; on the CPU for arrays); results are float64.

* :func:`~ntkcheck.dynamics.iterative.cg.cg_solve` / :func:`~ntkcheck.dynamics.iterative.cg.cg_interpolate`:
  preconditioned conjugate gradients for
  ``(K + mu I) alpha = Y - h_ini(X)`` (seed 000 eq (5)), several right-hand sides at once
  (one CG recurrence per column, one kernel product per iteration for all active columns),
  with a Jacobi or a rank-r pivoted-Cholesky (Nyström) preconditioner.
* :func:`~ntkcheck.dynamics.iterative.krylov.krylov_mse_flow`: the MSE flow (seed 000 eq (3)) at finite times t by
  Lanczos:
  ``h(t)`` needs ``phi_t(K + mu I) (Y - h0)`` with the entire function
  ``phi_t(lambda) = (1 - exp(-c lambda t)) / lambda``, approximated on the Krylov space
  ``||b|| Q_m phi_t(T_m) e_1`` (no inverse of K, no eigendecomposition of K).
* :func:`~ntkcheck.dynamics.iterative.blocked_cholesky.blocked_cholesky_solve`: the direct solve for a kernel in a
  file, factorised block row
  by block row within a memory budget (the factor itself goes to a file).

Failures carry the measured numbers: :class:`IterativeConvergenceError` (residual or change
estimate and iterations), :class:`ntkcheck.SingularKernelError` (a non-positive curvature or a
failed pivot, with its value).
"""
