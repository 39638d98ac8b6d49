"""The exact NTK from per-layer rules: forward inputs A, backward signals G, no full Jacobian.

For a block of B rows, one forward pass with hooks runs the rules of
:mod:`ntkcheck.kernels._rules` on every call of every layer; then one backward pass per
cotangent through the retained graph (per output o for ``output="full"``/``"trace"``:
``sum_n f_o(x_n)``; one pass of ``sum_n sum_o f_o(x_n) / sqrt(O)`` for ``"sum"``)
gives each call's signal G (K, B, S, m) for K cotangents.  Calls of one parameter (tied weights, several
uses of a layer) are concatenated along the position axis S, so both contractions
below sum over every pair of calls: the kernel of a parameter used twice is exact.

Each (parameter, rows) group contributes by the cheaper of two exact contractions,
chosen by this cost model (per pair of rows, K cotangents, S positions, G of width
m, A of width k, rows per block B, b bytes per number):

* Gram-of-Grams: ``Theta = sum_{s,t} (G_s . G'_t) (A_s . A'_t)``.
  Flops ``S^2 (2 K^2 m + 2 k + 3 K^2)``; scratch ``(K^2 + 1) S^2 b`` bytes per pair,
  features ``(K S m + S k) b`` bytes per row.  For an embedding ``A_s . A'_t`` is
  ``[id_s == id'_t]`` (k counted as 1).
* per-sample gradients ``g_n = sum_s G_{n,s} (x) A_{n,s}`` then ``g g'^T``.
  Flops ``2 K^2 m k + 4 K S m k / B`` (the Gram, and forming g once per row on each
  side); features ``K m k b`` bytes per row.  For an embedding k is the table's
  row count and forming g is a scatter of ``K S m`` numbers.

On a diagonal tile (``x2`` None) both Gram products multiply only row slabs on and
above the diagonal and mirror the rest (about 5/8 of the flops with 4 slabs).
Gram-of-Grams is chosen when its flops are not larger (a dense layer, S = 1: always
for widths over ~2; a convolution with many output pixels: per-sample).  Gains and
biases (``kind="diag"``) are per-sample gradients of width m; a bias that always
accompanies its weight shares the weight's G Gram.  Parameters no rule serves get
per-sample ``torch.func`` gradients (``vmap(jacrev)`` of just those parameters,
the others fixed) in the same pass.

A block's features are formed :data:`FEATURE_ROWS` rows at a time (one forward and
backward pass each) and written into tensors of the whole block, so the autograd
graph's activations and signals scale with a chunk, not with the block: at N = 1024
this cut the peak memory of a 3-layer CNN's kernel from 363 to 122 MiB (and its
time by a quarter).  The work is labelled for ``torch.profiler`` as
``ntkcheck.<stage>:<parameter>`` (stages ``forward``/``backward`` with parameter
``*``, ``per_sample``/``gram_of_grams``/``torch_func`` for the features of a
parameter as the cost model chose, ``tile`` for its Gram), and while
:data:`COST_LOG` is a list the cost model's inputs and flop counts are logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.profiler import record_function

from ntkcheck.kernels._rules import Piece, rule_for

PROBE_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
"""Relative agreement a rule's per-sample gradient must reach on the probe (else the parameter is
served by torch.func)."""


@dataclass
class Vec:
    """Per-sample gradients ``scale * g``, g (K, B, P), of parameter ``name`` (or of some of its rows)."""

    name: str
    g: torch.Tensor
    rows: tuple[int, int] | None = None
    scale: float = 1.0


@dataclass
class Gram:
    """Gram-of-Grams features of one parameter: G (K, B, S, m) and A (B, S, k) or ids (B, S)."""

    name: str
    g: torch.Tensor
    a: torch.Tensor
    index: bool
    bias_name: str | None = None
    bias_mult2: float = 0.0
    mult2: float = 1.0


def cost_model(k_cot: int, s: int, m: int, k: int, block: int, *, index: bool) -> tuple[float, float]:
    """Flops per pair of rows of the two contractions of the module docstring: (Gram-of-Grams, per-sample)."""
    gram = s * s * (2 * k_cot * k_cot * m + (1 if index else 2 * k) + 3 * k_cot * k_cot)
    forming = k_cot * s * m if index else 2 * k_cot * s * m * k
    per_sample = 2 * k_cot * k_cot * m * k + 2 * forming / max(block, 1)
    return float(gram), float(per_sample)


def use_gram(k_cot: int, s: int, m: int, k: int, block: int, *, index: bool) -> bool:
    """The cost model of the module docstring: True when Gram-of-Grams takes no more flops."""
    gram, per_sample = cost_model(k_cot, s, m, k, block, index=index)
    return gram <= per_sample


COST_LOG: list[dict[str, Any]] | None = None
"""When a list, every grouping of a block appends one entry per weight-like parameter group: its name, the
cost model's inputs and both flop counts, and the choice (read by the benchmarks; None: nothing is logged)."""

FEATURE_ROWS = 64
"""Rows per forward/backward pass when forming a block's features: the graph's activations and signals then
scale with this many rows, not with the block (whose features are assembled chunk by chunk)."""


def rows_key(piece: Piece) -> tuple[int, int]:
    return piece.rows if piece.rows is not None else (0, piece.param.shape[0] if piece.param.ndim else 1)


class Engine:
    """Kernel features and tiles of ``model`` (with ``output_fn``) from per-layer rules.

    ``names``: trainable parameters by ``id``; ``sum_outputs``: one cotangent
    ``1/sqrt(O)`` per output (``output="sum"``) instead of one per output.
    """

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 n_out: int, *, sum_outputs: bool, block: int) -> None:
        self.model = model
        self.forward = forward
        self.n_out = n_out
        self.sum_outputs = sum_outputs
        self.block = block
        self.names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.uncovered: dict[str, str] = {}  # name -> why no rule serves it

    # -- one forward pass with rules, backward passes for the signals ---------------------------------

    def _capture(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Piece], dict[str, str]]:
        batch = x.shape[0]
        pieces: list[Piece] = []
        declined: dict[str, str] = {}

        def hook(module: nn.Module, inputs: tuple, kwargs: dict, output: Any) -> Any:
            got = rule_for(module)(module, inputs, kwargs, output, batch)  # type: ignore[misc]
            if got is None:
                for p in module.parameters():
                    if id(p) in self.names:
                        declined[self.names[id(p)]] = f"its rule ({type(module).__name__}) declined a call"
                return None
            replacement = None
            if isinstance(got, tuple):
                got, replacement = got
            pieces.extend(pc for pc in got if id(pc.param) in self.names)
            return replacement

        handles = [m.register_forward_hook(hook, with_kwargs=True) for m in self.model.modules()
                   if rule_for(m) is not None]
        try:
            with torch.enable_grad():
                f = self.forward(self.model, x)
        finally:
            for h in handles:
                h.remove()
        return f, pieces, declined

    def cotangents(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """(K, B, O): one basis cotangent per output, or the single ``1/sqrt(O)`` one."""
        o = self.n_out
        if self.sum_outputs:
            return torch.full((1, batch, o), 1.0 / math.sqrt(o), dtype=like.dtype, device=like.device)
        return torch.eye(o, dtype=like.dtype, device=like.device)[:, None, :].expand(o, batch, o)

    def _signals(self, f: torch.Tensor, pieces: list[Piece], cot: torch.Tensor) -> list[torch.Tensor]:
        outs = list({id(pc.out): pc.out for pc in pieces}.values())
        slot = {id(t): i for i, t in enumerate(outs)}
        k_cot = cot.shape[0]
        # one backward pass per cotangent through the retained graph: measured on CPU about twice as fast as
        # one pass vmapped over the K cotangents (is_grads_batched) for convolutions, and no slower for attention
        passes = [torch.autograd.grad(f, outs, cot[i], retain_graph=i < k_cot - 1, allow_unused=True)
                  for i in range(k_cot)]
        per_out = [[torch.zeros_like(t) if p[j] is None else p[j] for p in passes] for j, t in enumerate(outs)]
        if k_cot == 1:  # a view: no copy of the signal
            return [pc.signal(per_out[slot[id(pc.out)]][0]).unsqueeze(0) for pc in pieces]
        return [torch.stack([pc.signal(g) for g in per_out[slot[id(pc.out)]]]) for pc in pieces]

    def _group(self, pieces: list[Piece], signals: list[torch.Tensor], *, all_vec: bool) -> list[Vec | Gram]:
        """One term per (parameter, rows): its calls' positions concatenated, so cross-call terms count."""
        keyed = [((self.names[id(pc.param)], rows_key(pc)), pc, g) for pc, g in zip(pieces, signals)]
        groups: dict[tuple[str, tuple[int, int]], list[tuple[Piece, torch.Tensor]]] = {}
        for key, pc, g in keyed:
            groups.setdefault(key, []).append((pc, g))
        bias_users: dict[tuple[str, tuple[int, int]], set] = {}
        for key, pc, _ in keyed:
            if pc.bias is not None:
                bias_users.setdefault((self.names[id(pc.bias[0])], key[1]), set()).add((key, pc.bias[1]))
        fused: dict[tuple[str, tuple[int, int]], tuple[str, float]] = {}
        for key, members in groups.items():
            first = members[0][0].bias
            if first is None or any(q.bias is None or q.bias[0] is not first[0] or q.bias[1] != first[1]
                                    for q, _ in members):
                continue
            bkey = (self.names[id(first[0])], key[1])
            if len(bias_users[bkey]) == 1 and bkey not in groups:
                fused[key] = (bkey[0], first[1])
        for key, members in list(groups.items()):
            if key in fused:
                continue
            for pc, g in members:
                if pc.bias is not None:
                    bkey = (self.names[id(pc.bias[0])], key[1])
                    groups.setdefault(bkey, []).append(
                        (Piece(pc.bias[0], "diag", pc.out, pc.signal, None, pc.bias[1], pc.rows), g))
        terms: list[Vec | Gram] = []
        for (name, rows), members in groups.items():
            kind = members[0][0].kind
            if kind == "diag":
                unit = members[0][0].mult or 1.0
                with record_function(f"ntkcheck.per_sample:{name}"):
                    h = _sum([_weighted(g, pc.activations()).sum(2) for pc, g in members],
                             [pc.mult / unit for pc, _ in members])
                terms.append(Vec(name, h, rows, unit))
                continue
            param = members[0][0].param
            mults = {pc.mult for pc, _ in members}
            common = (mults.pop() if len(mults) == 1 else 1.0) or 1.0  # else folded into each call's a or G
            k_cot, _, _, m = members[0][1].shape
            s = sum(g.shape[2] for _, g in members)
            width = param.shape[0] if kind == "index" else param.numel() // param.shape[0]
            g = _cat([g if kind == "outer" or pc.mult == common else g * pc.mult for pc, g in members], 2)
            bias = fused.get((name, rows))
            gram_flops, vec_flops = cost_model(k_cot, s, m, width, self.block, index=kind == "index")
            per_sample = all_vec or gram_flops > vec_flops
            if COST_LOG is not None and not all_vec:
                COST_LOG.append(dict(name=name, rows=rows, kind=kind, cotangents=k_cot, positions=s, m=m, k=width,
                                     block=self.block, gram_of_grams_flops=gram_flops, per_sample_flops=vec_flops,
                                     choice="per_sample" if per_sample else "gram_of_grams"))
            if per_sample:
                with record_function(f"ntkcheck.per_sample:{name}"):
                    if kind == "index":
                        vec = _scatter_per_sample(g, _cat([pc.activations() for pc, _ in members], 1), width)
                    else:
                        vec = _sum([_outer_per_sample(pc, gp) for pc, gp in members],
                                   [pc.mult / common for pc, _ in members])
                terms.append(Vec(name, vec, rows, common))
                if bias:
                    terms.append(Vec(bias[0], g.sum(2), rows, bias[1]))
                continue
            with record_function(f"ntkcheck.gram_of_grams:{name}"):
                    a = _cat([pc.activations() * (pc.mult / common) if kind == "outer" and pc.mult != common
                          else pc.activations() for pc, _ in members], 1)
            terms.append(Gram(name, g, a, kind == "index", bias[0] if bias else None,
                              bias[1] ** 2 if bias else 0.0, common ** 2))
        return terms

    def _fallback(self, x: torch.Tensor, cot: torch.Tensor) -> list[Vec]:
        names = [n for n in self.params if n in self.uncovered]
        if not names:
            return []
        sub = {n: self.params[n].detach() for n in names}
        rest = {n: p.detach() for n, p in self.model.named_parameters() if n not in sub}
        rest.update(dict(self.model.named_buffers()))

        def single(s: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return self.forward(lambda t: functional_call(self.model, {**rest, **s}, (t,)), xi.unsqueeze(0))[0]

        with record_function(f"ntkcheck.torch_func:{','.join(names)}"):
            jac = vmap(jacrev(single), (None, 0))(sub, x)
        return [Vec(n, torch.einsum("kbo,bop->kbp", cot, jac[n].flatten(2))) for n in names]

    def _served(self, pieces: list[Piece]) -> list[Piece]:
        """The pieces of parameters the rules serve: a served bias whose weight is not keeps its own piece."""
        kept = []
        for pc in pieces:
            bias = pc.bias if pc.bias is not None and self.names[id(pc.bias[0])] not in self.uncovered else None
            if self.names[id(pc.param)] not in self.uncovered:
                kept.append(replace(pc, bias=bias))
            elif bias is not None:
                kept.append(Piece(bias[0], "diag", pc.out, pc.signal, None, bias[1], pc.rows))
        return kept

    def features(self, x: torch.Tensor, *, all_vec: bool = False) -> list[Vec | Gram]:
        """Features of a block of rows: one term per parameter group (see the module docstring).

        Formed :data:`FEATURE_ROWS` rows at a time (rows are independent: each row's features come from its
        own forward and backward signals), written into tensors of the whole block."""
        if x.shape[0] <= FEATURE_ROWS:
            return self._chunk_features(x, all_vec=all_vec)
        n = x.shape[0]
        out: list[Vec | Gram] = []
        for lo in range(0, n, FEATURE_ROWS):
            hi = min(lo + FEATURE_ROWS, n)
            part = self._chunk_features(x[lo:hi], all_vec=all_vec)
            if not out:
                out = [_alloc_rows(t, n) for t in part]
            for whole, piece in zip(out, part):
                whole.g[:, lo:hi] = piece.g
                if isinstance(whole, Gram):
                    whole.a[lo:hi] = piece.a
        return out

    def _chunk_features(self, x: torch.Tensor, *, all_vec: bool) -> list[Vec | Gram]:
        with record_function("ntkcheck.forward:*"):
            f, pieces, declined = self._capture(x)
        fresh = {n: why for n, why in declined.items() if n not in self.uncovered}
        if fresh:
            raise RuntimeError(f"layer rules declined calls for {sorted(fresh)} on a block of {x.shape[0]} rows "
                               "after serving them on the probe; use method='jacobian'")
        pieces = self._served(pieces)
        cot = self.cotangents(x.shape[0], f)
        with record_function("ntkcheck.backward:*"):
            signals = self._signals(f, pieces, cot) if pieces else []
        terms = self._group(pieces, signals, all_vec=all_vec) if pieces else []
        return terms + self._fallback(x, cot)

    # -- the probe: which parameters the rules serve exactly ---------------------------------------------

    def prepare(self, xp: torch.Tensor) -> None:
        """Run the rules on probe rows ``xp`` against autograd per-sample gradients; parameters whose rule is
        missing, declines, or disagrees go to ``uncovered`` (served by torch.func)."""
        f, pieces, declined = self._capture(xp)
        self.uncovered.update(declined)
        covered = {self.names[id(pc.param)] for pc in pieces}
        covered |= {self.names[id(pc.bias[0])] for pc in pieces if pc.bias is not None and id(pc.bias[0]) in self.names}
        for n in self.params:
            if n not in covered and n not in self.uncovered:
                self.uncovered[n] = "no layer rule serves it"
        spans: dict[str, set[tuple[int, int]]] = {}
        kinds: dict[str, set[str]] = {}
        for pc in pieces:
            spans.setdefault(self.names[id(pc.param)], set()).add(rows_key(pc))
            kinds.setdefault(self.names[id(pc.param)], set()).add(pc.kind)
        for n, rs in spans.items():
            ordered = sorted(rs)
            if any(a[1] > b[0] for a, b in zip(ordered, ordered[1:])) or len(kinds[n]) > 1:
                self.uncovered.setdefault(n, "its calls' rules describe overlapping parts of it")
        pieces = self._served(pieces)
        if not pieces:
            return
        gen = torch.Generator(device=f.device).manual_seed(0)
        cot = torch.randn(1, *f.shape, generator=gen, dtype=f.dtype, device=f.device)
        terms = self._group(pieces, self._signals(f, pieces, cot), all_vec=True)
        rule_grads: dict[str, torch.Tensor] = {}
        for t in terms:
            p = self.params[t.name]
            full = rule_grads.setdefault(t.name, torch.zeros(xp.shape[0], p.numel(), dtype=f.dtype, device=f.device))
            lo, hi = t.rows if t.rows is not None else (0, p.shape[0] if p.ndim else 1)
            width = p.numel() // (p.shape[0] if p.ndim else 1)
            full[:, lo * width:hi * width] += t.g[0] * t.scale
        names = list(rule_grads)
        tol = PROBE_TOL.get(f.dtype, 1e-2)
        worst = {n: 0.0 for n in names}
        for i in range(xp.shape[0]):
            with torch.enable_grad():
                out = self.forward(self.model, xp[i:i + 1])
                true = torch.autograd.grad((out * cot[0, i:i + 1]).sum(), [self.params[n] for n in names],
                                           allow_unused=True)
            true = [torch.zeros_like(self.params[n]) if t is None else t for n, t in zip(names, true)]
            # a parameter whose gradient is rounding noise (a key bias under softmax) is judged on the row's scale
            floor = 1e-2 * float(torch.sqrt(sum((t * t).sum() for t in true))) + 1e-300
            for n, t in zip(names, true):
                err = float((rule_grads[n][i] - t.reshape(-1)).norm()) / max(float(t.norm()), floor)
                worst[n] = max(worst[n], err)
        for n, err in worst.items():
            if err > tol:
                self.uncovered[n] = f"its rule's per-sample gradient is off by {err:.2g} (relative) on a probe"

    # -- tiles ---------------------------------------------------------------------------------------------

    def tiles(self, f1: list[Vec | Gram], f2: list[Vec | Gram], *, names: list[str], trace: bool,
              per_layer: bool) -> dict[str, torch.Tensor]:
        """Kernel tiles (B1, B2, K', K') (K' = 1 for ``trace``): per parameter, or their sum as ``"total"``."""
        out: dict[str, torch.Tensor] = {}

        def add(name: str, t: torch.Tensor) -> None:
            key = name if per_layer else "total"
            out[key] = t if key not in out else out[key].add_(t)

        for t1, t2 in zip(f1, f2):
            with record_function(f"ntkcheck.tile:{t1.name}"):
                if isinstance(t1, Vec):
                    tile = _vec_tile(t1.g, t2.g, trace)
                    add(t1.name, tile if t1.scale * t2.scale == 1.0 else tile.mul_(t1.scale * t2.scale))
                    continue
                gg = _gg(t1.g, t2.g, trace)  # (K', B1, S1, K', B2, S2)
                aa = _aa(t1, t2)  # (B1, S1, B2, S2)
                if t1.mult2 != 1.0:
                    aa = aa * t1.mult2
                if t1.bias_name is not None and per_layer:
                    add(t1.bias_name, (gg.sum((2, 5)) * t1.bias_mult2).permute(1, 3, 0, 2))
                elif t1.bias_name is not None:
                    aa = aa + t1.bias_mult2
                add(t1.name, (gg * aa[None, :, :, None]).sum((2, 5)).permute(1, 3, 0, 2))
        for n in names:
            if n not in out:
                b1, b2 = _rows(f1), _rows(f2)
                k = 1 if trace else f1[0].g.shape[0]
                out[n] = torch.zeros(b1, b2, k, k, dtype=f1[0].g.dtype, device=f1[0].g.device)
        return out


def _rows(terms: list[Vec | Gram]) -> int:
    return terms[0].g.shape[1]


def _alloc_rows(t: Vec | Gram, n: int) -> Vec | Gram:
    """An empty term like ``t`` for ``n`` rows (rows: axis 1 of ``g``, axis 0 of ``a``)."""
    g = t.g.new_empty((t.g.shape[0], n, *t.g.shape[2:]))
    if isinstance(t, Vec):
        return replace(t, g=g)
    return replace(t, g=g, a=t.a.new_empty((n, *t.a.shape[1:])))


def _cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _sum(parts: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``sum_i weights[i] * parts[i]``, without copies for a single unit-weight part."""
    total = parts[0] if weights[0] == 1.0 else parts[0] * weights[0]
    for part, w in zip(parts[1:], weights[1:]):
        total = total + (part if w == 1.0 else part * w)
    return total


def _weighted(g: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    return g if a is None else g * a[None]


def _outer_per_sample(piece: Piece, g: torch.Tensor) -> torch.Tensor:
    """One call's per-sample gradients (K, B, m * k) of an ``"outer"`` piece, without its multiplier."""
    if piece.per_sample is not None:
        return piece.per_sample(g)
    return torch.einsum("kbsm,bsn->kbmn", g, piece.activations()).reshape(g.shape[0], g.shape[1], -1)


def _scatter_per_sample(g: torch.Tensor, ids: torch.Tensor, width: int) -> torch.Tensor:
    """Per-sample gradients (K, B, width * m) of an embedding table of ``width`` rows looked up at ``ids``."""
    k_cot, b, s, m = g.shape
    flat = (torch.arange(b, device=ids.device)[:, None] * width + ids).reshape(-1)
    out = torch.zeros(k_cot, b * width, m, dtype=g.dtype, device=g.device)
    out.index_add_(1, flat, g.reshape(k_cot, b * s, m))
    return out.view(k_cot, b, width * m)


def _vec_tile(g1: torch.Tensor, g2: torch.Tensor, trace: bool) -> torch.Tensor:
    k, b1, p = g1.shape
    b2 = g2.shape[1]
    if trace:
        x1 = g1.transpose(0, 1).reshape(b1, k * p)
        return _gram(x1, x1 if g1 is g2 else g2.transpose(0, 1).reshape(b2, k * p))[:, :, None, None]
    x1 = g1.reshape(k * b1, p)
    return _gram(x1, x1 if g1 is g2 else g2.reshape(k * b2, p)).view(k, b1, k, b2).permute(1, 3, 0, 2)


def _gg(g1: torch.Tensor, g2: torch.Tensor, trace: bool) -> torch.Tensor:
    k, b1, s1, m = g1.shape
    b2, s2 = g2.shape[1], g2.shape[2]
    if trace:
        x1 = g1.permute(1, 2, 0, 3).reshape(b1 * s1, k * m)
        gg = _gram(x1, x1 if g1 is g2 else g2.permute(1, 2, 0, 3).reshape(b2 * s2, k * m))
        return gg.view(1, b1, s1, 1, b2, s2)
    x1 = g1.reshape(k * b1 * s1, m)
    return _gram(x1, x1 if g1 is g2 else g2.reshape(k * b2 * s2, m)).view(k, b1, s1, k, b2, s2)


SLAB_ROWS = 32
"""Rows per slab of a symmetric Gram: slabs of at least this many rows keep the matmuls efficient."""


def _gram(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``x1 @ x2.T``; when ``x2`` is ``x1``, only slabs on and above the diagonal are multiplied and the rest
    mirrored (``(q + 1) / (2 q)`` of the flops with q slabs, up to 8)."""
    r = x1.shape[0]
    slabs = min(8, r // SLAB_ROWS)
    if x2 is not x1 or slabs < 2:
        return x1 @ x2.T
    out = torch.empty(r, r, dtype=x1.dtype, device=x1.device)
    edges = [r * i // slabs for i in range(slabs + 1)]
    for lo, hi in zip(edges, edges[1:]):
        out[lo:hi, lo:] = x1[lo:hi] @ x1[lo:].T
        out[hi:, lo:hi] = out[lo:hi, hi:].T
    return out


def _aa(t1: Gram, t2: Gram) -> torch.Tensor:
    b1, s1 = t1.a.shape[:2]
    b2, s2 = t2.a.shape[:2]
    if t1.index:
        return (t1.a.reshape(-1)[:, None] == t2.a.reshape(-1)[None, :]).to(t1.g.dtype).view(b1, s1, b2, s2)
    return (t1.a.reshape(b1 * s1, -1) @ t2.a.reshape(b2 * s2, -1).T).view(b1, s1, b2, s2)


def row_bytes(terms: list[Vec | Gram]) -> tuple[int, int]:
    """Bytes per row of a block's features, and scratch bytes per pair of rows of a tile."""
    b = _rows(terms)
    feats = sum(t.g.numel() * t.g.element_size() + (t.a.numel() * t.a.element_size() if isinstance(t, Gram) else 0)
                for t in terms) // b
    pair = 0
    for t in terms:
        if isinstance(t, Gram):
            k, _, s, _ = t.g.shape
            pair = max(pair, 2 * (k * k + 1) * s * s * t.g.element_size())
    return feats, pair
