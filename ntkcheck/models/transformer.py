"""Transformer encoders: embedding, blocks of self-attention and MLP with LayerNorm, pooled readout."""

from __future__ import annotations

import torch
from torch import nn

from ntkcheck._support.validation import check_choice, check_positive_int
from ntkcheck.models.family import Family, LayerFactory
from ntkcheck.models.layers import ACTIVATIONS, Embedding, LayerNorm, Linear, SelfAttention

POSITIONALS = ("learned", "none")
NORMS = ("pre", "post")
SEQUENCE_READOUTS = ("mean", "first")


class TransformerBlock(nn.Module):
    """Self-attention and an MLP ``Linear -> activation -> Linear``, each with a residual and a LayerNorm.

    ``norm="pre"``: ``h + attn(ln1(h))`` then ``h + mlp(ln2(h))``;
    ``norm="post"``: ``ln1(h + attn(h))`` then ``ln2(h + mlp(h))``.
    """

    def __init__(
        self,
        attention: SelfAttention,
        ln1: LayerNorm,
        fc1: Linear,
        fc2: Linear,
        ln2: LayerNorm,
        *,
        activation: str,
        norm: str,
    ) -> None:
        super().__init__()
        self.attention, self.ln1, self.fc1, self.fc2, self.ln2 = attention, ln1, fc1, fc2, ln2
        self.norm = norm
        self._phi = ACTIVATIONS[activation]

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self._phi(self.fc1(h)))
        return out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.norm == "pre":
            h = h + self.attention(self.ln1(h))
            return h + self._mlp(self.ln2(h))
        h = self.ln1(h + self.attention(h))
        out: torch.Tensor = self.ln2(h + self._mlp(h))
        return out


class Transformer(Family):
    """An encoder over sequences of T positions, pooled and read out to (N, out_features).

    Input: integer token ids (N, T) with ``vocab_size`` (an :class:`~ntkcheck.models.Embedding`
    of ``vocab_size`` rows), or feature vectors (N, T, in_features) with ``in_features``
    (a :class:`~ntkcheck.models.Linear` to d_model): exactly one of the two.  A learned
    positional embedding of ``max_len`` rows is added when ``positional="learned"``.
    Then ``n_blocks`` :class:`TransformerBlock` s (pre- or post-norm), a final LayerNorm
    for pre-norm, the readout (``"mean"`` over positions or the ``"first"`` position),
    and the head.

    Args:
        d_model: width of the residual stream.
        n_heads: attention heads (must divide d_model).
        n_blocks: number of blocks (>= 1).
        mlp_width: hidden width of each block's MLP.
        out_features: number of outputs O.
        vocab_size, in_features: see above.
        max_len: the longest sequence accepted (needed for ``positional="learned"``).
        positional: ``"learned"`` or ``"none"``.
        norm: ``"pre"`` or ``"post"``.
        readout: ``"mean"`` or ``"first"``.
        qk_scaling: ``"sqrt"`` (logits / sqrt(head_dim)) or ``"linear"`` (logits / head_dim);
            see :class:`~ntkcheck.models.SelfAttention`.
        head_width: ``None`` for a ``Linear`` head, else the width of a
            ``Linear -> activation -> Linear`` head (what :func:`~ntkcheck.double_last_layer` doubles).
        activation: of the MLPs and the head (default ``"gelu"``).
        bias, parametrization, weight_std, bias_std, init, generator, dtype, device:
            as for :class:`~ntkcheck.MLP`; embeddings draw ntk ``N(0, 1)`` times
            ``weight_std`` / standard ``N(0, weight_std^2)``, LayerNorms start at gain 1, bias 0.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_blocks: int,
        mlp_width: int,
        out_features: int = 1,
        *,
        vocab_size: int | None = None,
        in_features: int | None = None,
        max_len: int | None = None,
        positional: str = "learned",
        norm: str = "pre",
        readout: str = "mean",
        qk_scaling: str = "sqrt",
        head_width: int | None = None,
        activation: str = "gelu",
        bias: bool = True,
        parametrization: str = "ntk",
        weight_std: float = 1.0,
        bias_std: float = 0.1,
        init: str = "fan_in",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.n_heads = check_positive_int(n_heads, "n_heads")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.n_blocks = check_positive_int(n_blocks, "n_blocks")
        self.mlp_width = check_positive_int(mlp_width, "mlp_width")
        self.out_features = check_positive_int(out_features, "out_features")
        if (vocab_size is None) == (in_features is None):
            raise ValueError(
                "exactly one of vocab_size (token ids) and in_features (feature vectors) must be "
                f"given, got vocab_size={vocab_size!r}, in_features={in_features!r}"
            )
        self.vocab_size = None if vocab_size is None else check_positive_int(vocab_size, "vocab_size")
        self.in_features = None if in_features is None else check_positive_int(in_features, "in_features")
        self.max_len = None if max_len is None else check_positive_int(max_len, "max_len")
        self.positional = check_choice(positional, "positional", POSITIONALS)
        if positional == "learned" and max_len is None:
            raise ValueError("max_len must be given for positional='learned' (the table has max_len rows)")
        self.norm = check_choice(norm, "norm", NORMS)
        self.readout = check_choice(readout, "readout", SEQUENCE_READOUTS)
        check_choice(qk_scaling, "qk_scaling", ("sqrt", "linear"))
        self.head_width = None if head_width is None else check_positive_int(head_width, "head_width")
        make = LayerFactory(
            activation=activation,
            bias=bias,
            parametrization=parametrization,
            weight_std=weight_std,
            bias_std=bias_std,
            init=init,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        self.activation = make.activation
        self.arch = dict(
            d_model=d_model,
            n_heads=n_heads,
            n_blocks=n_blocks,
            mlp_width=mlp_width,
            out_features=out_features,
            vocab_size=vocab_size,
            in_features=in_features,
            max_len=max_len,
            positional=positional,
            norm=norm,
            readout=readout,
            qk_scaling=qk_scaling,
            head_width=head_width,
            **make.common(),
        )
        self.in_shape: tuple[int | None, ...] = (None,) if self.in_features is None else (None, self.in_features)
        d = self.d_model
        if vocab_size is not None:
            self.embed: Embedding | Linear = make.embedding(vocab_size, d)
        else:
            assert in_features is not None, "exactly one of vocab_size and in_features is given (checked above)"
            self.embed = make.linear(in_features, d)
        self.position = make.embedding(max_len, d) if positional == "learned" else None  # type: ignore[arg-type]
        self.blocks = nn.ModuleList(
            TransformerBlock(
                _attention(make, d, self.n_heads, qk_scaling),
                make.layer_norm(d),
                make.linear(d, self.mlp_width),
                make.linear(self.mlp_width, d),
                make.layer_norm(d),
                activation=self.activation,
                norm=self.norm,
            )
            for _ in range(self.n_blocks)
        )
        self.final_norm = make.layer_norm(d) if norm == "pre" else None
        self.head = make.head(d, self.head_width, self.out_features)

    def _check_tokens(self, x: torch.Tensor) -> None:
        if self.max_len is not None and x.shape[1] > self.max_len:
            raise ValueError(f"x must have at most max_len={self.max_len} positions, got {x.shape[1]}")
        if self.vocab_size is None:
            return
        try:
            low, high = int(x.min()), int(x.max())
        except RuntimeError:  # under torch.func.vmap the values are not inspectable; the lookup then checks them
            return
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"x must hold token ids in [0, {self.vocab_size}), got values in [{low}, {high}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, tokens=self.vocab_size is not None)
        self._check_tokens(x)
        h = self.embed(x)
        if self.position is not None:
            # looked up per row (ids (N, T)), so the table's per-row gradients have a batch axis
            h = h + self.position(torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1))
        for block in self.blocks:
            h = block(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        h = h.mean(dim=1) if self.readout == "mean" else h[:, 0]
        out: torch.Tensor = self.head(h)
        return out


def _attention(make: LayerFactory, d: int, n_heads: int, qk_scaling: str) -> SelfAttention:
    """A :class:`SelfAttention` of width ``d`` whose q, k, v and out projections are drawn in that order."""
    q, k, v, out = (make.linear(d, d) for _ in range(4))
    return SelfAttention(q, k, v, out, n_heads, qk_scaling=qk_scaling)
