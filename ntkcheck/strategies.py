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

from dataclasses import asdict, dataclass

import torch
from hypothesis import strategies as st

from ntkcheck.networks import ACTIVATIONS, MLP

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Arch:
    """A reproducible MLP: its constructor arguments plus the seed of its initial draw."""

    in_features: int
    widths: tuple[int, ...]
    out_features: int
    activation: str
    bias: bool
    parametrization: str
    weight_std: float
    bias_std: float
    seed: int

    def build(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> MLP:
        """The MLP this describes, parameters drawn from ``torch.Generator().manual_seed(seed)``."""
        gen = torch.Generator().manual_seed(self.seed)
        kwargs = {k: v for k, v in asdict(self).items() if k not in ("in_features", "widths", "out_features", "seed")}
        return MLP(self.in_features, self.widths, self.out_features, generator=gen, dtype=dtype, device=device, **kwargs)

    def n_params(self) -> int:
        sizes = (self.in_features, *self.widths, self.out_features)
        return sum(a * b + (b if self.bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))

    def snippet(self) -> str:
        """Python that rebuilds this model (printed by failing properties)."""
        return f"model = {self!r}.build()"


def inputs(
    seed: int, n: int, d: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """n inputs in R^d, standard normal rows scaled to norm <= sqrt(d), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


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
) -> Arch:
    """Random MLP descriptions: depth (hidden layers) in [min_depth, max_depth], widths in [1, max_width].

    ``bias=None`` draws it; pass True/False to fix it (seed 001's claims need bias-free nets).
    """
    depth = draw(st.integers(min_depth, max_depth))
    return Arch(
        in_features=draw(st.integers(1, max_in)),
        widths=tuple(draw(st.lists(st.integers(1, max_width), min_size=depth, max_size=depth))),
        out_features=draw(st.integers(1, max_out)),
        activation=draw(st.sampled_from(activations)),
        bias=draw(st.booleans()) if bias is None else bias,
        parametrization=draw(st.sampled_from(parametrizations)),
        weight_std=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0 ** 0.5])),
        bias_std=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def seeds() -> st.SearchStrategy[int]:
    """Integer seeds for torch generators."""
    return st.integers(0, 2**31 - 1)
