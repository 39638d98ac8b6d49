"""Hypothesis strategies for NTK claims, public so other test suites can reuse them.

Every example is reproducible from what Hypothesis prints: an :class:`Arch` is a
frozen description (with the integer seed its parameters are drawn from), and
inputs are drawn from integer seeds too, so ``Arch(...).build()`` and
``inputs(seed, ...)`` rebuild the exact tensors of a failing example.

    from hypothesis import given
    from ntkcheck.strategies import architectures

    @given(architectures(max_depth=2))
    def test_something(arch):
        model = arch.build()
        ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from ntkcheck._validation import check_positive_int, check_seed
from ntkcheck.networks import ACTIVATIONS, MLP

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def stream(seed: int, index: int) -> int:
    """The seed of the ``index``-th independent random stream derived from ``seed`` (numpy SeedSequence).

    Neighbouring seeds give unrelated streams (``seed + 1`` would make example s's second
    stream example s+1's first).
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] % 2**63)


@dataclass(frozen=True)
class Arch:
    """A reproducible MLP: its constructor arguments, the seed of its initial draw, and its frozen layers.

    ``frozen`` lists indices into ``model.layers`` whose parameters get ``requires_grad=False``
    (the NTK then counts only the others); it never holds every layer.
    """

    in_features: int
    widths: tuple[int, ...]
    out_features: int
    activation: str
    bias: bool
    parametrization: str
    weight_std: float
    bias_std: float
    seed: int
    init: str = "fan_in"
    frozen: tuple[int, ...] = ()

    def build(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> MLP:
        """The MLP this describes, parameters drawn from ``torch.Generator().manual_seed(seed)``."""
        gen = torch.Generator().manual_seed(self.seed)
        model = MLP(self.in_features, self.widths, self.out_features, activation=self.activation, bias=self.bias,
                    parametrization=self.parametrization, weight_std=self.weight_std, bias_std=self.bias_std,
                    init=self.init, generator=gen, dtype=dtype, device=device)
        for index in self.frozen:
            model.layers[index].requires_grad_(False)
        return model

    def n_params(self) -> int:
        """The number of trainable parameters (frozen layers excluded)."""
        sizes = (self.in_features, *self.widths, self.out_features)
        return sum(a * b + (b if self.bias else 0)
                   for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])) if i not in self.frozen)

    def snippet(self) -> str:
        """Python that rebuilds this model (printed by failing properties)."""
        return f"model = {self!r}.build()"


def inputs(
    seed: int, n: int, d: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
    unit_ball: bool = False,
) -> torch.Tensor:
    """n inputs in R^d from ``seed``: standard normal rows, or with ``unit_ball=True`` points drawn
    uniformly from the closed unit ball (direction uniform, radius U^(1/d); seed 001 Lemma 3 assumes
    |x| <= 1)."""
    n, d = check_positive_int(n, "n"), check_positive_int(d, "d")
    gen = torch.Generator().manual_seed(check_seed(seed, "seed"))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if unit_ball:
        radius = torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1.0 / d)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300) * radius
    return x.to(dtype=dtype, device=device)


@st.composite
def architectures(
    draw: st.DrawFn,
    *,
    min_depth: int = 1,
    max_depth: int = 4,
    max_width: int = 64,
    max_in: int = 5,
    max_out: int = 3,
    activations: tuple[str, ...] = tuple(ACTIVATIONS),
    parametrizations: tuple[str, ...] = ("ntk", "standard"),
    bias: bool | None = None,
    frozen: bool | None = False,
) -> Arch:
    """Random MLP descriptions: depth (hidden layers) in [min_depth, max_depth], widths in [1, max_width].

    ``bias=None`` draws it (half the draws; a drawn bias always has a nonzero scale, so it
    contributes to the kernel); pass True/False to fix it (seed 001's claims need bias-free nets).
    Standard parametrization draws its init too: fan-in or seed 000 §7's Glorot-style
    ``std = v sqrt(2 / (fan_in + fan_out))``.  ``frozen=None`` freezes a random proper subset
    of the layers in a quarter of the draws, ``True`` in every draw (needs two layers or more),
    ``False`` never.
    """
    # Every draw below happens in every example (the choices that do not apply are drawn and ignored):
    # a choice sequence of fixed shape keeps Hypothesis from rejecting mutated draws as invalid.
    depth = draw(st.integers(min_depth, max_depth))
    widths = tuple(draw(st.integers(1, max_width)) for _ in range(max_depth))[:depth]
    drawn_bias = draw(st.booleans())
    with_bias = drawn_bias if bias is None else bias
    parametrization = draw(st.sampled_from(parametrizations))
    drawn_init = draw(st.sampled_from(["fan_in", "glorot"]))
    init = drawn_init if parametrization == "standard" else "fan_in"
    n_layers = depth + 1
    drawn_freeze = draw(st.integers(0, 3)) == 0
    mask = draw(st.integers(0, 2**(max_depth + 1) - 1)) % max(2**n_layers - 2, 1) + 1  # nonempty proper subset
    freeze = n_layers > 1 and (frozen is True or (frozen is None and drawn_freeze))
    frozen_layers = tuple(i for i in range(n_layers) if mask >> i & 1) if freeze else ()
    bias_std = draw(st.sampled_from([0.1, 0.5, 1.0]))
    return Arch(
        in_features=draw(st.integers(1, max_in)),
        widths=widths,
        out_features=draw(st.integers(1, max_out)),
        activation=draw(st.sampled_from(activations)),
        bias=with_bias,
        parametrization=parametrization,
        weight_std=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0 ** 0.5])),
        bias_std=bias_std if with_bias else 0.0,
        seed=draw(st.integers(0, 2**31 - 1)),
        init=init,
        frozen=frozen_layers,
    )


def seeds() -> st.SearchStrategy[int]:
    """Integer seeds for torch generators."""
    return st.integers(0, 2**31 - 1)


@dataclass(frozen=True)
class Dataset:
    """A reproducible regression set: n distinct inputs in R^d and bounded targets in [-1, 1]^O."""

    seed: int
    n: int
    d: int
    out: int = 1

    def x(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        return inputs(self.seed, self.n, self.d, dtype=dtype, device=device)

    def y(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """Targets tanh(N(0, 1)): bounded by 1. Shape (n,) for one output, (n, O) otherwise."""
        gen = torch.Generator().manual_seed(stream(self.seed, 1))
        y = torch.tanh(torch.randn(self.n, self.out, generator=gen, dtype=torch.float64))
        return (y[:, 0] if self.out == 1 else y).to(dtype=dtype, device=device)

    def x_test(self, m: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        return inputs(stream(self.seed, 2), m, self.d, dtype=dtype, device=device)


@st.composite
def datasets(draw: st.DrawFn, arch: Arch, *, min_n: int = 1, max_n: int = 8) -> Dataset:
    """Training sets for ``arch`` with n * O < the parameter count (so J J^T can be invertible)."""
    limit = min(max_n, (arch.n_params() - 1) // arch.out_features)
    if limit < min_n:
        raise ValueError(f"{arch!r} has too few parameters for a dataset of {min_n} points")
    return Dataset(draw(seeds()), draw(st.integers(min_n, limit)), arch.in_features, arch.out_features)


@st.composite
def lp_losses(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0):
    """Losses of seed 000 §4's class: an L^p loss, or a positive mixture of two."""
    from ntkcheck.losses import LpLoss

    p = draw(st.floats(min_p, max_p).map(lambda v: round(v, 2)))
    first = LpLoss(p)
    if not draw(st.booleans()):
        return first
    q = draw(st.floats(min_p, max_p).map(lambda v: round(v, 2)))
    w = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    return first + w * LpLoss(q)


@dataclass(frozen=True)
class InitialFunction:
    """A zero-mean random function h(x) = scale * sum_j a_j cos(w_j . x + b_j) / sqrt(J), from a seed.

    With a_j ~ N(0, 1) independent of (w, b), E h(x) = 0 for every x: the
    "unbiased distribution of random functions" of seed 000 Thm 3.
    """

    seed: int
    d: int
    out: int = 1
    features: int = 16
    scale: float = 1.0
    frequency: float = 2.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        w = self.frequency * torch.randn(self.d, self.features, generator=gen, dtype=torch.float64)
        b = 2 * torch.pi * torch.rand(self.features, generator=gen, dtype=torch.float64)
        a = torch.randn(self.features, self.out, generator=gen, dtype=torch.float64)
        h = torch.cos(x.double().cpu() @ w + b) @ a * (self.scale / self.features**0.5)
        h = h[:, 0] if self.out == 1 else h
        return h.to(dtype=x.dtype, device=x.device)


def initial_functions(d: int, out: int = 1) -> st.SearchStrategy[InitialFunction]:
    """Random initial outputs h_ini for inputs in R^d."""
    return st.builds(InitialFunction, seed=seeds(), d=st.just(d), out=st.just(out),
                     scale=st.sampled_from([0.1, 1.0, 3.0]))
