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
