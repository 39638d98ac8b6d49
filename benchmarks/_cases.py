"""The network sizes the benchmark files sweep: one frozen record per MLP case."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPCase:
    """N inputs of dimension d through ``depth`` hidden layers of ``width``, ``outputs`` outputs, in ``dtype``."""

    n: int
    width: int
    d: int
    depth: int = 3
    outputs: int = 1
    dtype: str = "float32"

    @property
    def id(self) -> str:
        return f"N{self.n}-m{self.width}-d{self.d}-L{self.depth}-O{self.outputs}-{self.dtype}"


@dataclass(frozen=True)
class FamilyCase:
    """One network of a family on N inputs, for the side-by-side kernel benchmarks.

    ``family``: ``"mlp"`` (d inputs, ``depth`` hidden layers of ``width``), ``"cnn"``
    (``depth`` 3x3 "same" convolutions of ``width`` channels on ``channels`` x ``image`` x
    ``image`` images, global average pooling), ``"resnet"`` (a convolutional stem to
    ``width`` channels and ``depth`` residual blocks, same images) or ``"transformer"``
    (``depth`` pre-norm blocks of width ``width`` and ``heads`` heads, MLP width
    ``4 * width``, on ``tokens`` token ids from a vocabulary of ``vocab``).
    ``methods``: what runs on it (``"ntkcheck"``, ``"recipe"``: the torch.func
    Jacobian-contraction recipe, ``"ntkcheck-budget"``: ``ntkcheck.ntk`` with
    ``memory_budget = budget_mib`` MiB); ``memory``: whether peak memory is measured.
    """

    family: str
    n: int
    width: int
    depth: int
    d: int = 16
    channels: int = 3
    image: int = 16
    tokens: int = 16
    heads: int = 4
    vocab: int = 64
    outputs: int = 1
    dtype: str = "float32"
    methods: tuple[str, ...] = ("ntkcheck", "recipe")
    memory: bool = False
    budget_mib: int | None = None

    @property
    def id(self) -> str:
        if self.family == "mlp":
            shape = f"d{self.d}-m{self.width}x{self.depth}"
        elif self.family == "transformer":
            shape = f"T{self.tokens}-d{self.width}-h{self.heads}-L{self.depth}"
        else:
            shape = f"{self.channels}x{self.image}x{self.image}-c{self.width}-L{self.depth}"
        return f"{self.family}-N{self.n}-{shape}-O{self.outputs}-{self.dtype}"
