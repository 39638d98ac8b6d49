"""Hypothesis strategies for NTK claims, public so other test suites can reuse them.

Every example is reproducible from what Hypothesis prints: an :class:`Arch` is a
frozen description of an MLP, CNN, ResNet or Transformer (with the integer seed its
parameters are drawn from), and inputs are drawn from integer seeds too, so
``Arch(...).build()`` and ``Dataset(...).x()`` (or ``inputs(seed, ...)`` for rows)
rebuild the exact tensors of a failing example.

    from hypothesis import given, strategies as st
    from ntkcheck.testing.strategies import architectures, datasets

    @given(architectures(max_depth=2), st.data())
    def test_something(arch, data):
        model = arch.build()
        x = data.draw(datasets(arch)).x()   # rows, images, sequences or token ids
        ...

Pass ``families=("mlp",)`` where a claim is about MLPs only (analytic kernels, widths).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from ntkcheck._support.validation import check_positive_int, check_seed
from ntkcheck.models import ACTIVATIONS, CNN, MLP, ResNet, Transformer

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def stream(seed: int, index: int) -> int:
    """The seed of the ``index``-th independent random stream derived from ``seed`` (numpy SeedSequence).

    Neighbouring seeds give unrelated streams (``seed + 1`` would make example s's second
    stream example s+1's first).
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] % 2**63)


FAMILY_ORDER = ("mlp", "resnet", "cnn", "transformer")
"""Families in the order :func:`architectures` shrinks toward (index 0 first)."""


@dataclass(frozen=True)
class Arch:
    """A reproducible network of one family: its constructor arguments, the seed of its initial draw,
    and its frozen layers.

    ``family`` is ``"mlp"`` (:class:`~ntkcheck.MLP`: ``in_features``, hidden ``widths``),
    ``"cnn"`` (:class:`~ntkcheck.CNN`: ``in_features`` input channels, ``widths`` the channels of the
    convolutions, images of ``image_size`` x ``image_size``, or sequences of ``image_size`` positions
    when ``dims`` is 1), ``"resnet"`` (:class:`~ntkcheck.ResNet`: ``widths = (width,)``, ``blocks``
    residual blocks, LayerNorm placed by ``layer_norm`` (None, "pre" or "post"); dense on
    (N, in_features) when ``image_size`` is 0, convolutional on images (or sequences, ``dims`` 1) of
    ``in_features`` channels otherwise) or ``"transformer"``
    (:class:`~ntkcheck.Transformer`: ``d_model``, ``heads``, ``blocks``, ``widths = (mlp_width,)``,
    sequences of ``seq_len`` positions: integer token ids below ``vocab`` when ``vocab`` > 0, else
    feature vectors of ``in_features``).  ``in_shape`` is the shape of one input.

    ``frozen`` lists indices into :meth:`units` (the layers of an MLP; the convolutions then the head
    of a CNN; stem, blocks, head of a ResNet; embeddings, blocks, final norm, head of a Transformer)
    whose parameters get ``requires_grad=False`` (the NTK then counts only the others); it never
    holds every unit.
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
    family: str = "mlp"
    image_size: int = 0
    kernel_size: int = 3
    stride: int = 1
    padding: str | int = "same"
    readout: str = "gap"
    blocks: int = 1
    branch_scale: float | None = None
    d_model: int = 0
    heads: int = 1
    seq_len: int = 0
    vocab: int = 0
    norm: str = "pre"
    dims: int = 2
    layer_norm: str | None = None

    def build(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network this describes, parameters drawn from ``torch.Generator().manual_seed(seed)``."""
        gen = torch.Generator().manual_seed(self.seed)
        common = dict(activation=self.activation, bias=self.bias, parametrization=self.parametrization,
                      weight_std=self.weight_std, bias_std=self.bias_std, init=self.init, generator=gen,
                      dtype=dtype, device=device)
        if self.family == "mlp":
            model: torch.nn.Module = MLP(self.in_features, self.widths, self.out_features, **common)
        elif self.family == "cnn":
            model = CNN(self.in_features, self.widths, self.out_features, kernel_size=self.kernel_size,
                        stride=self.stride, padding=self.padding, readout=self.readout,
                        image_size=self.image_size, dims=self.dims, **common)
        elif self.family == "resnet":
            shape = (dict(in_channels=self.in_features, kernel_size=self.kernel_size, image_size=self.image_size,
                          dims=self.dims) if self.image_size else dict(in_features=self.in_features))
            model = ResNet(self.widths[0], self.blocks, self.out_features, branch_scale=self.branch_scale,
                           norm=self.layer_norm, **shape, **common)
        elif self.family == "transformer":
            source = dict(vocab_size=self.vocab) if self.vocab else dict(in_features=self.in_features)
            model = Transformer(self.d_model, self.heads, self.blocks, self.widths[0], self.out_features,
                                max_len=self.seq_len, norm=self.norm, **source, **common)
        else:
            raise ValueError(f"family must be one of {FAMILY_ORDER}, got {self.family!r}")
        units = self.units(model)
        for index in self.frozen:
            units[index].requires_grad_(False)
        return model

    def units(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The modules ``frozen`` indexes, in forward order (see the class docstring)."""
        if self.family == "mlp":
            return list(model.layers)
        if self.family == "cnn":
            return [*model.convs, model.head]
        if self.family == "resnet":
            return [model.stem, *model.residual, model.head]
        extra = [model.final_norm] if model.final_norm is not None else []
        position = [model.position] if model.position is not None else []
        return [model.embed, *position, *model.blocks, *extra, model.head]

    def n_units(self) -> int:
        """``len(units(model))`` without building the model."""
        if self.family == "mlp":
            return len(self.widths) + 1
        if self.family == "cnn":
            return len(self.widths) + 1
        if self.family == "resnet":
            return self.blocks + 2
        return 2 + 1 + self.blocks + (self.norm == "pre")  # embed, position, blocks, final norm, head

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The shape of one input: (d,), (C, H, W), (T, d) or, for token ids, (T,)."""
        if self.family == "transformer":
            return (self.seq_len,) if self.vocab else (self.seq_len, self.in_features)
        if self.family in ("cnn", "resnet") and self.image_size:
            return (self.in_features, *(self.image_size,) * self.dims)
        return (self.in_features,)

    def n_params(self) -> int:
        """The number of trainable parameters (frozen units excluded)."""
        if self.family == "mlp":
            sizes = (self.in_features, *self.widths, self.out_features)
            return sum(a * b + (b if self.bias else 0)
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])) if i not in self.frozen)
        model = self.build(dtype=torch.float64)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def __repr__(self) -> str:
        """``Arch(...)`` with every field an MLP needs and the others only where they differ from their
        defaults: ``eval`` of it rebuilds this description."""
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or f.name in ("init", "frozen") or value != f.default:
                shown.append(f"{f.name}={value!r}")
        return f"Arch({', '.join(shown)})"

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
    families: tuple[str, ...] = FAMILY_ORDER,
) -> Arch:
    """Random network descriptions of the given ``families`` (``"mlp"``, ``"cnn"``, ``"resnet"``,
    ``"transformer"``), shrinking toward the smallest family (mlp < resnet < cnn < transformer) and size.

    MLPs: depth (hidden layers) in [min_depth, max_depth], widths in [1, max_width], 1 to ``max_in``
    inputs.  The other families are kept small enough for exact Jacobians in a property test:
    CNNs of 1-2 convolutions with 2-8 channels (kernel 1-3, stride 1-2, ``"same"`` (odd kernels, stride 1)
    or 0/1 padding,
    average-pooling or flatten readout) on 4x4 to 6x6 images or sequences of 4 to 6 positions, 1-3
    channels; ResNets of 1-2 blocks of width 2-16 (bounded by ``max_width``), dense on (N, d) or
    convolutional (kernel 1 or 3) on 4x4/5x5 images or sequences, default or drawn branch scale, without,
    pre- or post-LayerNorm; Transformers of 1 block, d_model 4 or 8, 1-2 heads, MLP width 2-8,
    pre- or post-norm, on 2-4 positions of integer tokens (vocabulary 3-8) or feature vectors.
    Depth, width and input arguments other than ``max_width``/``max_in`` apply to MLPs only.

    ``bias=None`` draws it (half the draws; a drawn bias always has a nonzero scale, so it
    contributes to the kernel); pass True/False to fix it (seed 001's claims need bias-free nets).
    Standard parametrization draws its init too: fan-in or seed 000 §7's Glorot-style
    ``std = v sqrt(2 / (fan_in + fan_out))``.  ``frozen=None`` freezes a random proper subset
    of the units (:meth:`Arch.units`) in a quarter of the draws, ``True`` in every draw (needs two
    units or more), ``False`` never.
    """
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILY_ORDER]
    if not families or unknown:
        raise ValueError(f"families must be a nonempty subset of {FAMILY_ORDER}, got {families!r}")
    ordered = tuple(f for f in FAMILY_ORDER if f in families)
    # Every draw below happens in every example (the choices that do not apply are drawn and ignored):
    # a choice sequence of fixed shape keeps Hypothesis from rejecting mutated draws as invalid.
    # MLP-only strategies draw exactly the sequence they always drew (no family draws at all).
    family = draw(st.sampled_from(ordered)) if len(ordered) > 1 else ordered[0]
    depth = draw(st.integers(min_depth, max_depth))
    widths = tuple(draw(st.integers(1, max_width)) for _ in range(max_depth))[:depth]
    drawn_bias = draw(st.booleans())
    with_bias = drawn_bias if bias is None else bias
    parametrization = draw(st.sampled_from(parametrizations))
    drawn_init = draw(st.sampled_from(["fan_in", "glorot"]))
    init = drawn_init if parametrization == "standard" else "fan_in"
    drawn_freeze = draw(st.integers(0, 3)) == 0
    mask = draw(st.integers(0, 2**(max_depth + 1) - 1))
    bias_std = draw(st.sampled_from([0.1, 0.5, 1.0]))
    fields = dict(
        in_features=draw(st.integers(1, max_in)),
        out_features=draw(st.integers(1, max_out)),
        activation=draw(st.sampled_from(activations)),
        bias=with_bias,
        parametrization=parametrization,
        weight_std=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0 ** 0.5])),
        bias_std=bias_std if with_bias else 0.0,
        seed=draw(st.integers(0, 2**31 - 1)),
        init=init,
    )
    if ordered != ("mlp",):
        small = max(2, min(8, max_width))
        n_convs = draw(st.integers(1, 2))
        channels = tuple(draw(st.integers(2, small)) for _ in range(2))[:n_convs]
        kernel = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.sampled_from(["same", 0, 1]))
        image = draw(st.integers(4, 6))
        readout = draw(st.sampled_from(["gap", "flatten"]))
        res_width = draw(st.integers(2, max(2, min(16, max_width))))
        res_blocks = draw(st.integers(1, 2))
        res_conv = draw(st.booleans())
        branch_scale = draw(st.sampled_from([None, 0.5, 1.0]))
        d_model = draw(st.sampled_from([4, 8]))
        heads = draw(st.integers(1, 2))
        mlp_width = draw(st.integers(2, small))
        seq_len = draw(st.integers(2, 4))
        tokens = draw(st.booleans())
        vocab = draw(st.integers(3, 8))
        norm = draw(st.sampled_from(["pre", "post"]))
        wide_mask = draw(st.integers(0, 2**6 - 1))
        dims = draw(st.sampled_from([2, 1]))
        layer_norm = draw(st.sampled_from([None, "pre", "post"]))
        channels_in = min(fields["in_features"], 3)
        if family == "cnn":
            if padding == "same" and (stride > 1 or kernel % 2 == 0):  # "same": stride 1, odd kernels only
                padding = 1
            size = image
            for _ in channels:
                pad = (kernel - 1) // 2 if padding == "same" else padding
                size = (size + 2 * pad - kernel) // stride + 1
            if size < 1:  # too small for unpadded strided kernels: pad by 1 (keeps every size >= 1)
                padding = 1
            fields.update(family="cnn", in_features=channels_in, widths=channels, kernel_size=kernel,
                          stride=stride, padding=padding, image_size=image, readout=readout, dims=dims)
        elif family == "resnet":
            fields.update(family="resnet", widths=(res_width,), blocks=res_blocks, branch_scale=branch_scale,
                          layer_norm=layer_norm)
            if res_conv:
                fields.update(in_features=channels_in, image_size=min(image, 5), kernel_size=kernel | 1, dims=dims)
        elif family == "transformer":
            fields.update(family="transformer", widths=(mlp_width,), d_model=d_model, heads=heads, blocks=1,
                          seq_len=seq_len, vocab=vocab if tokens else 0, norm=norm)
        if family != "mlp":
            mask = wide_mask
    arch = Arch(widths=fields.pop("widths", widths), **fields)
    n_units = arch.n_units()
    mask = mask % max(2**n_units - 2, 1) + 1  # nonempty proper subset
    freeze = n_units > 1 and (frozen is True or (frozen is None and drawn_freeze))
    frozen_units = tuple(i for i in range(n_units) if mask >> i & 1) if freeze else ()
    return dataclasses.replace(arch, frozen=frozen_units) if frozen_units else arch


def seeds() -> st.SearchStrategy[int]:
    """Integer seeds for torch generators."""
    return st.integers(0, 2**31 - 1)


def tokens(seed: int, n: int, seq_len: int, vocab: int, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """n distinct sequences of ``seq_len`` integer token ids in [0, vocab) from ``seed`` (int64, (n, T));
    needs n <= vocab ** seq_len."""
    n, seq_len, vocab = (check_positive_int(v, name) for v, name in ((n, "n"), (seq_len, "seq_len"), (vocab, "vocab")))
    if n > vocab**seq_len:
        raise ValueError(f"only {vocab}**{seq_len} distinct sequences exist, asked for n={n}")
    gen = torch.Generator().manual_seed(check_seed(seed, "seed"))
    codes = torch.randperm(vocab**seq_len, generator=gen)[:n] if vocab**seq_len < 2**40 else None
    if codes is None:  # too many sequences to enumerate: draw and redraw duplicates
        rows: dict[tuple[int, ...], None] = {}
        while len(rows) < n:
            rows.setdefault(tuple(torch.randint(vocab, (seq_len,), generator=gen).tolist()))
        return torch.tensor(list(rows), dtype=torch.int64, device=device)
    digits = vocab ** torch.arange(seq_len - 1, -1, -1)
    return (codes[:, None] // digits % vocab).to(device=device)


@dataclass(frozen=True)
class Dataset:
    """A reproducible regression set: n distinct inputs and bounded targets in [-1, 1]^O.

    Inputs are rows of R^d when ``shape`` is empty (MLPs, dense ResNets), standard normal tensors of
    shape (n, *shape) otherwise (images (n, C, H, W), sequences (n, T, d)), or, when ``vocab`` > 0,
    distinct integer token sequences (n, T) with T = ``shape[0]``.
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
        gen = torch.Generator().manual_seed(stream(self.seed, 1))
        y = torch.tanh(torch.randn(self.n, self.out, generator=gen, dtype=torch.float64))
        return (y[:, 0] if self.out == 1 else y).to(dtype=dtype, device=device)

    def x_test(self, m: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        """m test inputs from an independent stream (for token ids at most vocab ** T of them)."""
        return self._inputs(stream(self.seed, 2), m, dtype, device)


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
        limit = min(limit, arch.vocab ** arch.seq_len)
    if limit < min_n:
        raise ValueError(f"{arch!r} has too few parameters for a dataset of {min_n} points")
    return dataset_for(arch, draw(seeds()), draw(st.integers(min_n, limit)))


@st.composite
def lp_losses(draw: st.DrawFn, *, min_p: float = 1.5, max_p: float = 4.0):
    """Losses of seed 000 §4's class: an L^p loss, or a positive mixture of two."""
    from ntkcheck.dynamics.losses import LpLoss

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
        h = torch.cos(rows @ w + b) @ a * (self.scale / self.features**0.5)
        h = h[:, 0] if self.out == 1 else h
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return h.to(dtype=dtype, device=x.device)


def initial_functions(d: int, out: int = 1) -> st.SearchStrategy[InitialFunction]:
    """Random initial outputs h_ini for inputs in R^d."""
    return st.builds(InitialFunction, seed=seeds(), d=st.just(d), out=st.just(out),
                     scale=st.sampled_from([0.1, 1.0, 3.0]))
