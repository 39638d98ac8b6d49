"""monte_carlo_ntk / monte_carlo_nngp: validation, reproducibility by seed, the mean and standard error against
numpy on the individual samples, and bounded memory (no sample is kept)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import ntkcheck as nk
from ntkcheck.kernels.monte_carlo import MonteCarloKernel, sample_generator

D = torch.float64


def _x(n: int = 5, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D)


def _mlp(g: torch.Generator, out: int = 2) -> nk.MLP:
    return nk.MLP(3, [4], out, weight_std=1.3, bias_std=0.2, generator=g, dtype=D)


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
@pytest.mark.parametrize(
    "n_samples, err, match",
    [
        (1, ValueError, "n_samples must be an int >= 2"),
        (0, ValueError, "n_samples must be an int >= 2"),
        (3.0, TypeError, "n_samples must be an int"),
        (True, TypeError, "n_samples must be an int"),
    ],
)
def test_n_samples_below_two_or_not_int_is_refused(fn, n_samples, err, match):
    with pytest.raises(err, match=match):
        fn(_mlp, _x(), n_samples=n_samples)


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
def test_factory_must_be_callable_and_return_a_module(fn):
    with pytest.raises(TypeError, match="factory must be a callable"):
        fn(_mlp(torch.Generator()), _x(), n_samples=2)  # a module, not a factory
    with pytest.raises(TypeError, match="factory must return a torch.nn.Module, got Tensor"):
        fn(lambda g: torch.zeros(3), _x(), n_samples=2)


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
def test_samples_of_different_shapes_are_refused_naming_factory(fn):
    calls = []

    def growing(g: torch.Generator) -> nn.Module:  # the second network has one more output
        calls.append(1)
        return _mlp(g, out=len(calls))

    with pytest.raises(ValueError, match=r"factory: the kernel of sample 1 has shape"):
        fn(growing, _x(), n_samples=3, output="full")


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
def test_bad_inputs_seed_and_output_are_refused_by_name(fn):
    with pytest.raises(ValueError, match="x2 must have x1's row shape"):
        fn(_mlp, _x(), _x(d=4), n_samples=2)
    with pytest.raises(ValueError, match="seed must be an int in"):
        fn(_mlp, _x(), n_samples=2, seed=-1)
    with pytest.raises(ValueError, match="output"):
        fn(_mlp, _x(), n_samples=2, output="diagonal")
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        fn(_mlp, np.zeros((3, 3)), n_samples=2)
    with pytest.raises(ValueError, match="x1 contains 1 NaN"):
        fn(_mlp, torch.tensor([[0.0, float("nan"), 1.0]], dtype=D), n_samples=2)


def test_nngp_refuses_outputs_without_one_row_per_input():
    class Scalar(nn.Module):
        def __init__(self, g: torch.Generator) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, generator=g, dtype=D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ self.w).sum()

    with pytest.raises(ValueError, match="factory: network 0 must map"):
        nk.monte_carlo_nngp(Scalar, _x(), n_samples=2)


# -- reproducibility ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
def test_same_seed_same_estimate_other_seed_other_estimate(fn):
    a = fn(_mlp, _x(), n_samples=4, seed=3)
    b = fn(_mlp, _x(), n_samples=4, seed=3)
    c = fn(_mlp, _x(), n_samples=4, seed=4)
    assert isinstance(a, MonteCarloKernel) and a.n_samples == 4
    assert torch.equal(a.mean, b.mean) and torch.equal(a.standard_error, b.standard_error)
    assert (a.mean - c.mean).abs().max() > 1e-3 * a.mean.abs().max()


def test_sample_generators_are_distinct_across_seeds_and_indices():
    """Not seed + index: (seed 0, sample 1) and (seed 1, sample 0) are different networks."""
    draws = {(s, i): float(torch.randn(1, generator=sample_generator(s, i))) for s in range(3) for i in range(3)}
    assert len(set(draws.values())) == len(draws)
    assert float(torch.randn(1, generator=sample_generator(2, 1))) == draws[(2, 1)]
    with pytest.raises(ValueError, match="index must be an int >= 0"):
        sample_generator(0, -1)


# -- the estimate against numpy on the samples --------------------------------------------------------------------


def _manual_samples(kind: str, x1: torch.Tensor, x2: torch.Tensor | None, n: int, seed: int) -> np.ndarray:
    """The S kernels, each computed here from its network sample_generator(seed, s) (no Welford)."""
    out = []
    for s in range(n):
        model = _mlp(sample_generator(seed, s))
        if kind == "ntk":
            k = nk.ntk(model, x1, x2, method="jacobian", output="full")
            k = k.diagonal(dim1=2, dim2=3).mean(-1)
        else:
            f1 = model(x1).detach()
            f2 = f1 if x2 is None else model(x2).detach()
            k = f1 @ f2.T / f1.shape[1]
        out.append(k.numpy())
    return np.stack(out)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("cross", [False, True])
def test_mean_and_standard_error_match_numpy(kind, cross):
    """mean = (1/S) sum K_s and s.e. = std_{ddof=1}(K_s) / sqrt(S) of the samples, entrywise."""
    n, seed = 7, 5
    x1, x2 = _x(4), (_x(3, seed=1) if cross else None)
    fn = nk.monte_carlo_ntk if kind == "ntk" else nk.monte_carlo_nngp
    got = fn(_mlp, x1, x2, n_samples=n, seed=seed)
    samples = _manual_samples(kind, x1, x2, n, seed)
    want_mean = samples.mean(0)
    want_se = samples.std(0, ddof=1) / np.sqrt(n)
    assert got.mean.shape == (4, 3 if cross else 4) and got.mean.dtype == D
    np.testing.assert_allclose(got.mean.numpy(), want_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.standard_error.numpy(), want_se, rtol=1e-10, atol=1e-14)
    assert float(got.standard_error.min()) > 0.0


def test_welford_keeps_the_standard_error_where_the_naive_formula_cancels():
    """Samples 1e12 + O(1e3): sum K^2 - S mean^2 loses every digit in float64 (eps 2e-16 of 2e25 is 4e9, the
    variance sum 2e7); Welford's recurrence does not."""

    class Offset(nn.Module):
        def __init__(self, g: torch.Generator) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 1, generator=g, dtype=D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1e6 + 1e-3 * (x @ self.w)

    x, n = _x(3), 20
    got = nk.monte_carlo_nngp(Offset, x, n_samples=n, seed=2)
    samples = np.stack([(lambda f: (f @ f.T).numpy())(Offset(sample_generator(2, s))(x).detach()) for s in range(n)])
    want = samples.std(0, ddof=1) / np.sqrt(n)
    naive = np.sqrt(np.abs((samples**2).sum(0) - n * samples.mean(0) ** 2) / ((n - 1) * n))
    assert np.abs(naive / want - 1).max() > 0.5  # the one-pass formula is useless here
    np.testing.assert_allclose(got.standard_error.numpy(), want, rtol=1e-6)


def test_output_modes_agree():
    """'trace' is the mean over the diagonal of 'full'; 'sum' is the kernel of sum_o f_o / sqrt(O)."""
    x = _x(4)
    full = nk.monte_carlo_ntk(_mlp, x, n_samples=3, seed=1, output="full")
    trace = nk.monte_carlo_ntk(_mlp, x, n_samples=3, seed=1, output="trace")
    summed = nk.monte_carlo_ntk(_mlp, x, n_samples=3, seed=1, output="sum")
    assert full.mean.shape == (4, 4, 2, 2)
    torch.testing.assert_close(trace.mean, full.mean.diagonal(dim1=2, dim2=3).mean(-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(summed.mean, full.mean.sum((2, 3)) / 2, rtol=1e-12, atol=0)
    nngp_full = nk.monte_carlo_nngp(_mlp, x, n_samples=3, seed=1, output="full")
    nngp = nk.monte_carlo_nngp(_mlp, x, n_samples=3, seed=1)
    torch.testing.assert_close(nngp.mean, nngp_full.mean.diagonal(dim1=2, dim2=3).mean(-1), rtol=1e-12, atol=0)


def test_transformer_has_a_monte_carlo_kernel():
    """No analytic limit, but the Monte Carlo NTK exists: it is the mean of the per-network kernels."""
    x = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=D)

    def tr(g: torch.Generator) -> nk.Transformer:
        return nk.Transformer(4, 2, 1, 4, 1, in_features=2, max_len=4, generator=g, dtype=D)

    got = nk.monte_carlo_ntk(tr, x, n_samples=3, seed=9)
    want = sum(nk.ntk(tr(sample_generator(9, s)), x, method="jacobian") for s in range(3)) / 3
    torch.testing.assert_close(got.mean, want, rtol=1e-10, atol=1e-12)
    assert float(got.standard_error.max()) > 0.0


# -- memory -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nk.monte_carlo_ntk, nk.monte_carlo_nngp])
def test_samples_and_networks_are_not_kept(fn):
    """While network s is built, the networks before it are gone and the live tensors of the kernel's shape do not
    grow with s (the accumulator holds mean and M2; no list of samples)."""
    x1, x2 = _x(7), _x(11, seed=1)
    shape = (7, 11)  # no other tensor of the test has this shape
    nets: list[weakref.ref] = []
    live: list[int] = []

    def factory(g: torch.Generator) -> nn.Module:
        if len(nets) in (3, 9):  # a collection and a scan of every live object: twice
            gc.collect()
            live.append(sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.shape == shape))
            alive = sum(r() is not None for r in nets)
            assert alive == 0, f"{alive} earlier networks are still referenced at sample {len(nets)}"
        model = _mlp(g)
        nets.append(weakref.ref(model))
        return model

    fn(factory, x1, x2, n_samples=10, seed=0)
    assert max(live) <= 3 and live[0] == live[1], f"live kernel-shaped tensors at samples 3 and 9: {live}"
