"""The layerwise exact NTK: per-layer Gram products, no Jacobian materialised.

For a linear layer ``z = c W a + b_mult b`` with input activations A (N x fan_in)
and per-sample backprop signals G^o = d f_o / d z (N x fan_out), the gradient of
output o at sample n is ``c G^o_n (x) A_n`` for W and ``b_mult G^o_n`` for b, so

    Theta_W[n, m, o, p] = c^2 (G^o G'^{pT})[n, m] (A A'^T)[n, m]
    Theta_b[n, m, o, p] = b_mult^2 (G^o G'^{pT})[n, m]

(the per-layer Gram of nngeometry and of seed 000 §12's per-layer kernels).
Because the rows of a supported module are independent, G for all N samples of
output o comes from ONE backward pass of sum_n f_o(x_n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck.errors import LayerwiseUnsupportedError
from ntkcheck.models import MLP, Linear
from ntkcheck.models.transforms import AntiSymmetric

ELEMENTWISE = (
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Softplus,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Identity,
)
"""Parameterless modules acting on each entry of a row: allowed between layers of an ``nn.Sequential``."""


@dataclass
class LayerFeatures:
    """What one linear layer contributes to the kernel of a block of rows."""

    weight_name: str | None  # None when the weight is frozen
    bias_name: str | None  # None when there is no trainable bias
    weight_mult2: float
    bias_mult2: float
    a: torch.Tensor  # (B, fan_in) input activations
    g: torch.Tensor  # (O * B, fan_out) backprop signals, output-major


def _check_structure(module: nn.Module, path: str) -> None:
    """Raise unless ``module`` is built only of pieces with independent batch rows."""
    if isinstance(module, (MLP, Linear, nn.Linear)) or isinstance(module, ELEMENTWISE):
        return
    if isinstance(module, AntiSymmetric):
        _check_structure(module.plus, f"{path}.plus")
        _check_structure(module.minus, f"{path}.minus")
        return
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            _check_structure(child, f"{path}.{name}")
        return
    raise LayerwiseUnsupportedError(
        f"method='layerwise' cannot serve module {path} ({type(module).__name__}): it supports ntkcheck.MLP, "
        "asi/rnd/double_last_layer of it, and nn.Sequential of linear layers and elementwise activations; "
        "use method='jacobian' or 'ntvp'"
    )


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's linear layers with their qualified names; raises if the layerwise formula does not apply."""
    _check_structure(model, "model")
    layers: list[tuple[str, nn.Module]] = [
        (name, m) for name, m in model.named_modules() if isinstance(m, (Linear, nn.Linear))
    ]
    calls = [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, (Linear, nn.Linear))]
    tensors = [id(p) for m in calls for p in m.parameters(recurse=False)]
    if len(calls) != len(layers) or len(set(tensors)) != len(tensors):
        raise LayerwiseUnsupportedError(
            "the linear-layer fast path needs every linear layer and parameter "
            "used once; the layer-rule engine serves shared ones"
        )
    owned = {id(p) for _, m in layers for p in m.parameters(recurse=False)}
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in owned]
    if stray:
        raise LayerwiseUnsupportedError(
            f"method='layerwise' needs every trainable parameter in a linear layer; model has {stray} outside them"
        )
    return layers


def parameter_names(layers: list[tuple[str, nn.Module]]) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the trainable parameters, layer by layer."""
    names = []
    for prefix, layer in layers:
        for kind in ("weight", "bias"):
            p = getattr(layer, kind)
            if p is not None and p.requires_grad:
                names.append(f"{prefix}.{kind}")
    return names


def _multipliers(layer: nn.Module) -> tuple[float, float]:
    if isinstance(layer, Linear):
        return layer.weight_mult, layer.bias_mult
    return 1.0, 1.0


def layer_features(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor) -> list[LayerFeatures]:
    """One forward pass and one backward pass per output give A_l and G_l of every layer."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if name in inputs:
                raise LayerwiseUnsupportedError(
                    f"method='layerwise': layer {name} ran twice in one forward pass (shared weights)"
                )
            inputs[name], outputs[name] = args[0].detach(), out

        return hook

    active = [(n, m) for n, m in layers if any(p.requires_grad for p in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in active]
    try:
        with torch.enable_grad():
            f = model(x)
    finally:
        for h in handles:
            h.remove()
    f = f.reshape(x.shape[0], -1)
    names = [n for n, _ in active]
    outs = [outputs[n] for n in names]
    n_out = f.shape[1]
    grads: list[list[torch.Tensor]] = [[] for _ in names]
    for o in range(n_out):
        gs = torch.autograd.grad(f[:, o].sum(), outs, retain_graph=o < n_out - 1, allow_unused=True)
        for slot, g, z in zip(grads, gs, outs):
            slot.append(torch.zeros_like(z) if g is None else g)
    feats = []
    for (name, layer), per_output in zip(active, grads):
        c, b = _multipliers(layer)
        w_name = f"{name}.weight" if layer.weight.requires_grad else None
        b_name = f"{name}.bias" if layer.bias is not None and layer.bias.requires_grad else None
        g = per_output[0] if len(per_output) == 1 else torch.cat(per_output)
        feats.append(LayerFeatures(w_name, b_name, c * c, b * b, inputs[name], g))
    return feats


def layer_tiles(
    f1: list[LayerFeatures], f2: list[LayerFeatures], *, per_layer: bool, n_out: int
) -> dict[str, torch.Tensor]:
    """Kernel tiles (B1, B2, O, O) from two blocks' features: per parameter, or their sum as ``"total"``."""
    b1, b2 = f1[0].a.shape[0], f2[0].a.shape[0]
    if f1 is f2 and not per_layer and n_out == 1 and b1 >= 2 * SLAB_ROWS:
        return {"total": _symmetric_total(f1).view(b1, b1, 1, 1)}
    tiles: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for l1, l2 in zip(f1, f2):
        gg = (l1.g @ l2.g.T).view(n_out, b1, n_out, b2)  # (O, B1, O, B2)
        if per_layer:
            if l1.weight_name is not None:
                aa = l1.weight_mult2 * (l1.a @ l2.a.T)
                tiles[l1.weight_name] = (gg * aa[None, :, None, :]).permute(1, 3, 0, 2)
            if l1.bias_name is not None:
                tiles[l1.bias_name] = (l1.bias_mult2 * gg).permute(1, 3, 0, 2)
            continue
        if l1.weight_name is not None:
            aa = l1.a @ l2.a.T
            aa.mul_(l1.weight_mult2)
            if l1.bias_name is not None:
                aa.add_(l1.bias_mult2)
        else:
            aa = torch.full((b1, b2), l1.bias_mult2, dtype=gg.dtype, device=gg.device)
        gg.mul_(aa[None, :, None, :])
        total = gg if total is None else total.add_(gg)
    if total is not None:
        tiles["total"] = total.permute(1, 3, 0, 2)
    return tiles


SLAB_ROWS = 128
"""Rows per slab of the symmetric scalar-output kernel (:func:`_symmetric_total`)."""


def _symmetric_total(f: list[LayerFeatures]) -> torch.Tensor:
    """The scalar-output kernel (B, B) of one block with itself: sum over layers of ``(G G^T) * (c^2 A A^T + b^2)``.

    The kernel is symmetric, so it is formed slab by slab of rows, each slab only from its own rows on: for
    rows ``lo:hi`` every layer's ``G[lo:hi] G[lo:]^T`` and ``A[lo:hi] A[lo:]^T`` are multiplied and the
    products accumulated into rows ``lo:hi``, columns ``lo:`` of the result while they are in cache; the part
    below the diagonal is the mirror image of the part above.  With q slabs this takes ``(q + 1) / (2 q)`` of
    the Gram flops (9/16 with the 8 slabs of 1024 rows).
    """
    b = f[0].a.shape[0]
    slabs = max(1, b // SLAB_ROWS)
    edges = [b * i // slabs for i in range(slabs + 1)]
    dtype, device = f[0].g.dtype, f[0].g.device
    out = torch.empty(b, b, dtype=dtype, device=device)
    # Two scratch buffers reused by every slab and layer: (rows, columns) views of them are contiguous.
    largest = max(hi - lo for lo, hi in zip(edges, edges[1:])) * b
    gg_buf, aa_buf = torch.empty(largest, dtype=dtype, device=device), torch.empty(largest, dtype=dtype, device=device)
    for lo, hi in zip(edges, edges[1:]):
        part = out[lo:hi, lo:]  # rows lo:hi, columns lo: of the result, accumulated in place
        shape = (hi - lo, b - lo)
        gg = gg_buf[: shape[0] * shape[1]].view(shape)
        aa = aa_buf[: shape[0] * shape[1]].view(shape)
        part.zero_()
        for layer in f:
            torch.mm(layer.g[lo:hi], layer.g[lo:].T, out=gg)
            if layer.weight_name is None:
                part.add_(gg, alpha=layer.bias_mult2)
                continue
            # c^2 A A^T + b^2 in one call, then one fused multiply-add into the slab
            aa.fill_(layer.bias_mult2 if layer.bias_name is not None else 0.0)
            aa.addmm_(layer.a[lo:hi], layer.a[lo:].T, alpha=layer.weight_mult2)
            part.addcmul_(gg, aa)
        block = out[lo:hi, lo:hi]  # the diagonal block: its upper triangle mirrored, so the result is symmetric
        block.copy_(block.triu() + block.triu(1).T)
        out[hi:, lo:hi] = out[lo:hi, hi:].T
    return out


def row_bytes(layers: list[tuple[str, nn.Module]], n_out: int, itemsize: int) -> int:
    """Memory of one row's features (A and G of every layer) plus the forward graph's activations."""
    per_row = 0
    for _, layer in layers:
        fan_out, fan_in = layer.get_parameter("weight").shape
        per_row += fan_in + n_out * fan_out + 3 * fan_out
    return per_row * itemsize
