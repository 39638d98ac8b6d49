"""Reproducible data for the strategies: inputs, token ids, regression sets, losses and initial functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from ntkcheck._support.seeding import child_seed, torch_generator
from ntkcheck._support.validation import check_positive_int, check_seed
from ntkcheck.dynamics.losses import Loss, LpLoss

from ._arch import Arch


def stream(seed: int, index: int) -> int:
    """The seed of the ``index``-th independent random stream under ``seed``: ``child_seed(seed, index)``.

    Neighbouring seeds give unrelated streams (``seed + 1`` would make example s's second
    stream example s+1's first).
    """
    return child_seed(seed, index)


def seeds() -> st.SearchStrategy[int]:
    """Integer seeds for torch generators."""
    return st.integers(0, 2**31 - 1)


def inputs(
    seed: int,
    n: int,
    d: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
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


def tokens(seed: int, n: int, seq_len: int, vocab: int, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """n distinct sequences of ``seq_len`` integer token ids in [0, vocab) from ``seed`` (int64, (n, T));
    needs n <= vocab ** seq_len."""
    n, seq_len, vocab = (check_positive_int(v, name) for v, name in ((n, "n"), (seq_len, "seq_len"), (vocab, "vocab")))
    if n > vocab**seq_len:
        raise ValueError(f"only {vocab}**{seq_len} distinct sequences exist, asked for n={n}")
    gen = torch.Generator().manual_seed(check_seed(seed, "seed"))
    if vocab**seq_len >= 2**40:  # too many sequences to enumerate: draw and redraw duplicates
        rows: dict[tuple[int, ...], None] = {}
        while len(rows) < n:
            rows.setdefault(tuple(torch.randint(vocab, (seq_len,), generator=gen).tolist()))
        return torch.tensor(list(rows), dtype=torch.int64, device=device)
    codes = torch.randperm(vocab**seq_len, generator=gen)[:n]
    digits = vocab ** torch.arange(seq_len - 1, -1, -1)
    return (codes[:, None] // digits % vocab).to(device=device)


@dataclass(frozen=True)
class Dataset:
    """A reproducible regression set: n distinct inputs and bounded targets in [-1, 1]^O.

    Inputs are rows of R^d when ``shape`` is empty (MLPs, dense ResNets), standard normal tensors of
    shape (n, *shape) otherwise (images (n, C, H, W), sequences (n, T, d)), or, when ``vocab`` > 0,
    distinct integer token sequences (n, T) with T = ``shape[0]``.  The training inputs are drawn
    from ``seed``, the targets from stream 1 and the test inputs from stream 2 under it
    (:func:`~ntkcheck._support.seeding.child_seed`).
    """

    seed: int
    n: int
    d: int
    out: int = 1
    shape: tuple[int, ...] = ()
    vocab: int = 0

    def _inputs(self, seed: int, m: int, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
        if self.vocab:
            return tokens(seed, min(m, self.vocab ** self.shape[0]), self.shape[0], self.vocab, device=device)
        if not self.shape:
            return inputs(seed, m, self.d, dtype=dtype, device=device)
        gen = torch.Generator().manual_seed(check_seed(seed, "seed"))
        x = torch.randn(check_positive_int(m, "n"), *self.shape, generator=gen, dtype=torch.float64)
        return x.to(dtype=dtype, device=device)

    def x(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """The n training inputs (token ids ignore ``dtype``)."""
        return self._inputs(self.seed, self.n, dtype, device)

    def y(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """Targets tanh(N(0, 1)): bounded by 1. Shape (n,) for one output, (n, O) otherwise."""
        gen = torch_generator(self.seed, 1)
        y = torch.tanh(torch.randn(self.n, self.out, generator=gen, dtype=torch.float64))
        return (y[:, 0] if self.out == 1 else y).to(dtype=dtype, device=device)

    def x_test(self, m: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """m test inputs from an independent stream (for token ids at most vocab ** T of them)."""
        return self._inputs(child_seed(self.seed, 2), m, dtype, device)


def dataset_for(arch: Arch, seed: int, n: int) -> Dataset:
    """The :class:`Dataset` of n inputs of ``arch``'s family (and its output count) drawn from ``seed``."""
    vocab = arch.vocab if arch.family == "transformer" else 0
    rows = arch.family == "mlp" or (arch.family == "resnet" and not arch.image_size)
    shape = () if rows else arch.in_shape
    return Dataset(seed, n, arch.in_features, arch.out_features, shape, vocab)


@st.composite
def datasets(draw: st.DrawFn, arch: Arch, *, min_n: int = 1, max_n: int = 8) -> Dataset:
    """Training sets for ``arch`` (inputs of its family's shape) with n * O < the parameter count
    (so J J^T can be invertible) and, for token ids, n <= vocab ** T (so the inputs are distinct)."""
    limit = min(max_n, (arch.n_params() - 1) // arch.out_features)
    if arch.family == "transformer" and arch.vocab:
        limit = min(limit, arch.vocab**arch.seq_len)
    if limit < min_n:
        raise ValueError(f"{arch!r} has too few parameters for a dataset of {min_n} points")
    return dataset_for(arch, draw(seeds()), draw(st.integers(min_n, limit)))


def _two_decimals(v: float) -> float:
    return round(v, 2)


@st.composite
def lp_losses(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0) -> Loss:
    """Losses of seed 000 §4's class: an L^p loss, or a positive mixture of two."""
    p = draw(st.floats(min_p, max_p).map(_two_decimals))
    first = LpLoss(p)
    if not draw(st.booleans()):
        return first
    q = draw(st.floats(min_p, max_p).map(_two_decimals))
    w = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    return first + w * LpLoss(q)


@dataclass(frozen=True)
class InitialFunction:
    """A zero-mean random function h(x) = scale * sum_j a_j cos(w_j . x + b_j) / sqrt(J), from a seed.

    With a_j ~ N(0, 1) independent of (w, b), E h(x) = 0 for every x: the
    "unbiased distribution of random functions" of seed 000 Thm 3.  Inputs of any shape (N, ...) are
    flattened to rows of d = prod(...) entries (token ids as floats; the output is then float64).
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
        rows = x.detach().double().cpu().reshape(x.shape[0], -1)  # images, sequences, token ids: flattened
        h: torch.Tensor = torch.cos(rows @ w + b) @ a * (self.scale / self.features**0.5)
        h = h[:, 0] if self.out == 1 else h
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return h.to(dtype=dtype, device=x.device)


def initial_functions(d: int, out: int = 1) -> st.SearchStrategy[InitialFunction]:
    """Random initial outputs h_ini for inputs in R^d."""
    return st.builds(
        InitialFunction, seed=seeds(), d=st.just(d), out=st.just(out), scale=st.sampled_from([0.1, 1.0, 3.0])
    )
