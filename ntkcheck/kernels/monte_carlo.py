"""Monte Carlo NTK and NNGP: means over independently initialized networks, with standard errors.

The infinite-width kernels of :mod:`ntkcheck.kernels.analytic` are expectations over the initialization
(Jacot et al. 2018; seed 001 eq (1) for the parametrization)::

    Sigma(x, x') = E_theta[ f_o(x; theta) f_o(x'; theta) ]                     (NNGP, per output o)
    Theta(x, x') = E_theta[ sum_p df_o(x)/dtheta_p  df_o(x')/dtheta_p ]        (NTK, seed 000 §3.2)

exactly so for one hidden layer (or one convolution) at any width, up to O(1/m) for deeper
networks.  :func:`monte_carlo_nngp` and :func:`monte_carlo_ntk` estimate them for ANY family,
including those without an analytic limit (the :class:`~ntkcheck.models.Transformer`), from
``S = n_samples`` networks ``factory(generator_s)``::

    mean  = (1/S) sum_s K_s
    s.e.  = sqrt( sum_s (K_s - mean)^2 / ((S - 1) S) )          entrywise

The samples are never stored: the mean and the sum of squared deviations ``M2`` are updated one
sample at a time by Welford's recurrence (``delta = K_s - mean; mean += delta / s;
M2 += delta (K_s - mean)``, numerically stable where the naive ``sum K^2 - S mean^2`` cancels),
so the memory is three kernels whatever ``n_samples``.

Sample ``s`` is ``factory(sample_generator(seed, s))``: a CPU ``torch.Generator`` seeded by
numpy's ``SeedSequence(seed, spawn_key=(s,))``, so the draws are reproducible, independent across
samples and across seeds (neither ``seed + s`` collisions nor overlapping streams).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck._support.seeding import torch_generator
from ntkcheck._support.validation import (
    check_batch,
    check_bool,
    check_choice,
    check_finite_result,
    check_positive_int,
    check_same_rows,
    check_seed,
)
from ntkcheck.kernels.empirical import METHODS, ntk

__all__ = ["MonteCarloKernel", "monte_carlo_nngp", "monte_carlo_ntk", "sample_generator"]

NTK_OUTPUTS = ("trace", "full", "sum")
NNGP_OUTPUTS = ("trace", "full")

Factory = Callable[[torch.Generator], nn.Module]
"""``generator -> nn.Module``: a freshly initialized network whose every random draw comes from ``generator``."""


@dataclass(frozen=True)
class MonteCarloKernel:
    """A Monte Carlo kernel estimate: the entrywise ``mean`` of ``n_samples`` independent kernels and its
    ``standard_error`` ``sqrt(sample variance / n_samples)`` (same shape as ``mean``)."""

    mean: torch.Tensor
    standard_error: torch.Tensor
    n_samples: int


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator network ``index`` of a Monte Carlo estimate with ``seed`` is drawn from.

    Seeded by the first 64-bit word of numpy's ``SeedSequence(seed, spawn_key=(index,))``: the
    streams of different ``(seed, index)`` are independent (a hash of both, not ``seed + index``).
    """
    seed = check_seed(seed, "seed")
    index = check_positive_int(index, "index", minimum=0)
    return torch_generator(seed, index)


class _Welford:
    """Running mean and sum of squared deviations (M2) of tensors of one shape, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, sample: torch.Tensor, index: int) -> None:
        sample = sample.detach().to(torch.float64)
        if self.mean is None:
            self.count, self.mean, self.m2 = 1, sample.clone(), torch.zeros_like(sample)
            return
        if sample.shape != self.mean.shape:
            raise ValueError(
                f"factory: the kernel of sample {index} has shape {tuple(sample.shape)}, but the earlier samples' "
                f"have {tuple(self.mean.shape)}: every network factory returns must have the same number of outputs"
            )
        assert self.m2 is not None
        self.count += 1
        delta = sample - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (sample - self.mean)

    def result(self, dtype: torch.dtype, what: str) -> MonteCarloKernel:
        assert self.mean is not None and self.m2 is not None
        se = torch.sqrt(self.m2.clamp_min(0.0) / ((self.count - 1) * self.count))
        return MonteCarloKernel(check_finite_result(self.mean.to(dtype), what), se.to(dtype), self.count)


def _check_common(
    factory: object, x1: object, x2: object, n_samples: object, seed: object, progress: object
) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    if isinstance(factory, nn.Module) or not callable(factory):
        hint = " (a network, not a function building one from a generator)" if isinstance(factory, nn.Module) else ""
        raise TypeError(f"factory must be a callable generator -> nn.Module, got {type(factory).__name__}{hint}")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)  # the standard error needs a sample variance
    seed = check_seed(seed, "seed")
    check_bool(progress, "progress")
    x1 = check_batch(x1, "x1")
    if x2 is not None:
        x2 = check_batch(x2, "x2")
        check_same_rows(x1, x2)
    return x1, x2, n_samples, seed


def _network(factory: Factory, seed: int, index: int) -> nn.Module:
    model = factory(sample_generator(seed, index))
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory must return a torch.nn.Module, got {type(model).__name__} (sample {index})")
    return model


def _samples(n_samples: int, progress: bool, desc: str) -> Iterable[int]:
    if not progress:
        return range(n_samples)
    from tqdm import tqdm

    bar: Iterable[int] = tqdm(range(n_samples), desc=desc, unit="net", leave=False)
    return bar


def monte_carlo_ntk(
    factory: Factory,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    n_samples: int,
    seed: int = 0,
    output: str = "trace",
    method: str = "auto",
    memory_budget: int | None = None,
    progress: bool = False,
) -> MonteCarloKernel:
    """Monte Carlo estimate of the expected empirical NTK ``E_theta Theta(x1, x2)`` over the initialization.

    ``Theta_s = sum_p df(x1)/dtheta_p df(x2)/dtheta_p^T`` (seed 000 §3.2; :func:`ntkcheck.ntk`) of
    network ``s = 0..S-1``, ``factory(sample_generator(seed, s))``; returns the entrywise mean
    ``(1/S) sum_s Theta_s`` and standard error ``sqrt(sum_s (Theta_s - mean)^2 / ((S - 1) S))``,
    accumulated by Welford's recurrence (the samples are not kept).  For MLP, CNN and ResNet nets
    the mean tends to :func:`ntkcheck.analytic_ntk` (exactly for one hidden layer, up to O(1/m)
    deeper); for others (a Transformer) it is the only kernel of the initialization there is.

    Args:
        factory: ``generator -> nn.Module``, a freshly initialized network drawn from ``generator``
            (e.g. ``lambda g: nk.MLP(5, [256], generator=g, dtype=torch.float64)``).  Every call must
            give a network of the same output count; the model's parameters must match x1's dtype.
        x1, x2: inputs (N1, ...) and (N2, ...) of the same row shape; ``x2=None`` means ``x1``.
        n_samples: S >= 2 networks (the standard error needs a sample variance).
        seed: the estimate's seed (int in [0, 2**64 - 1]); see :func:`sample_generator`.
        output: ``"trace"``: ``(1/O) sum_o Theta_oo``, (N1, N2), the per-output kernel (for O i.i.d.
            outputs its mean is the analytic ``Theta`` of one output, with O times less variance from
            the readout; for one output, that output's kernel); ``"full"``: (N1, N2, O, O), every output
            pair (the analytic limit is ``Theta (x) I_O``); ``"sum"``: the kernel of
            ``sum_o f_o / sqrt(O)``, (N1, N2).
        method, memory_budget: passed to :func:`ntkcheck.ntk`.
        progress: show a tqdm bar on stderr.

    Returns:
        :class:`MonteCarloKernel` of ``mean`` and ``standard_error`` in x1's dtype (accumulated in
        float64) and ``n_samples``.
    """
    x1, x2, n_samples, seed = _check_common(factory, x1, x2, n_samples, seed, progress)
    check_choice(output, "output", NTK_OUTPUTS)
    check_choice(method, "method", METHODS)
    acc = _Welford()
    for s in _samples(n_samples, progress, "monte_carlo_ntk"):
        model = _network(factory, seed, s)
        k = ntk(model, x1, x2, method=method, memory_budget=memory_budget, output=output)
        if output == "trace":
            k = k / _outputs(model, x1[:1], s).shape[1]  # sum_o Theta_oo / O
        del model
        acc.add(k, s)
    return acc.result(x1.dtype, "monte_carlo_ntk")


def _outputs(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    with torch.no_grad():
        f = model(x)
    if not isinstance(f, torch.Tensor) or f.ndim == 0 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"factory: network {index} must map (N, ...) inputs to outputs (N, ...) with N = {x.shape[0]}, got {shape}"
        )
    return f.reshape(x.shape[0], -1)


def monte_carlo_nngp(
    factory: Factory,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    n_samples: int,
    seed: int = 0,
    output: str = "trace",
    progress: bool = False,
) -> MonteCarloKernel:
    """Monte Carlo estimate of the NNGP covariance ``E_theta f(x1) f(x2)^T`` over the initialization.

    Network ``s`` (``factory(sample_generator(seed, s))``) gives the sample
    ``Sigma_s = f(x1) f(x2)^T / O`` over its O outputs (``"trace"``): at initialization the outputs
    are i.i.d. given the features of the last hidden layer, each with covariance Sigma, so this is
    an unbiased estimate of the per-output ``E f_o(x1) f_o(x2)`` (the analytic
    :func:`ntkcheck.analytic_nngp`, exact for one hidden layer, O(1/m) off deeper), with the
    readout's variance divided by O; ``"full"`` keeps every pair ``f_o(x1) f_o'(x2)``, (N1, N2, O, O)
    (limit ``Sigma (x) I_O``).  Returns the entrywise mean ``(1/S) sum_s Sigma_s`` and standard error
    ``sqrt(sum_s (Sigma_s - mean)^2 / ((S - 1) S))`` (Welford's recurrence, samples not kept), in
    x1's dtype.  Arguments as for :func:`monte_carlo_ntk`; the forward passes run under ``no_grad``.
    """
    x1, x2, n_samples, seed = _check_common(factory, x1, x2, n_samples, seed, progress)
    check_choice(output, "output", NNGP_OUTPUTS)
    acc = _Welford()
    for s in _samples(n_samples, progress, "monte_carlo_nngp"):
        model = _network(factory, seed, s)
        f1 = _outputs(model, x1, s).to(torch.float64)
        f2 = f1 if x2 is None else _outputs(model, x2, s).to(torch.float64)
        del model
        if output == "trace":
            k = f1 @ f2.T / f1.shape[1]
        else:
            k = f1[:, None, :, None] * f2[None, :, None, :]
        acc.add(k, s)
    return acc.result(x1.dtype, "monte_carlo_nngp")
