"""The exact NTK from per-layer rules: forward inputs A, backward signals G, no full Jacobian.

For a block of B rows, one forward pass with hooks runs the rules of
:mod:`ntkcheck.kernels._rules` on every call of every layer; then one backward pass per
cotangent through the retained graph (per output o for ``output="full"``/``"trace"``:
``sum_n f_o(x_n)``; one pass of ``sum_n sum_o f_o(x_n) / sqrt(O)`` for ``"sum"``)
gives each call's signal G (K, B, S, m) for K cotangents.  Calls of one parameter (tied weights, several
uses of a layer) are concatenated along the position axis S, so both contractions
below sum over every pair of calls: the kernel of a parameter used twice is exact.

Each (parameter, rows) group contributes by the cheaper of two exact contractions, Gram-of-Grams
or per-sample gradients, as the cost model of :mod:`ntkcheck.kernels._features` chooses; on a
diagonal tile (``x2`` None) both Gram products multiply only row slabs on and above the diagonal
and mirror the rest (about 5/8 of the flops with 4 slabs).  Gains and
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
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.profiler import record_function

from ntkcheck.kernels._contractions import feature_tiles
from ntkcheck.kernels._features import (
    Gram,
    Term,
    Vec,
    alloc_rows,
    cat,
    cost_model,
    outer_per_sample,
    rows_key,
    scatter_per_sample,
    weighted,
    weighted_sum,
)
from ntkcheck.kernels._piece import Piece
from ntkcheck.kernels._rules import rule_for

PROBE_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
"""Relative agreement a rule's per-sample gradient must reach on the probe (else the parameter is
served by torch.func)."""

COST_LOG: list[dict[str, Any]] | None = None
"""When a list, every grouping of a block appends one entry per weight-like parameter group: its name, the
cost model's inputs and both flop counts, and the choice (read by the benchmarks; None: nothing is logged)."""

FEATURE_ROWS = 64
"""Rows per forward/backward pass when forming a block's features: the graph's activations and signals then
scale with this many rows, not with the block (whose features are assembled chunk by chunk)."""

GroupKey = tuple[str, tuple[int, int]]
"""A parameter group: the parameter's name and the rows of it that its pieces describe."""

Member = tuple[Piece, torch.Tensor]
"""One call of a group: its piece and its signal G (K, B, S, m)."""


def _bias_piece(pc: Piece, bias: tuple[torch.Tensor, float] | None = None) -> Piece:
    """The ``"diag"`` piece of the bias that ``pc`` carries (or of ``bias``): the call's signal, no ``a``."""
    carried = bias if bias is not None else pc.bias
    assert carried is not None, "a bias piece needs a piece that carries a bias"
    return Piece(carried[0], "diag", pc.out, pc.signal, None, carried[1], pc.rows)


def _diag_term(name: str, rows: tuple[int, int], members: list[Member]) -> Vec:
    """The per-sample gradients of a gain or bias (``kind="diag"``), of width m."""
    unit = members[0][0].mult or 1.0
    with record_function(f"ntkcheck.per_sample:{name}"):
        h = weighted_sum(
            [weighted(g, pc.activations()).sum(2) for pc, g in members], [pc.mult / unit for pc, _ in members]
        )
    return Vec(name, h, rows, unit)


class Engine:
    """Kernel features and tiles of ``model`` (with ``output_fn``) from per-layer rules.

    ``names``: trainable parameters by ``id``; ``sum_outputs``: one cotangent
    ``1/sqrt(O)`` per output (``output="sum"``) instead of one per output.
    """

    def __init__(
        self,
        model: nn.Module,
        forward: Callable[[Any, torch.Tensor], torch.Tensor],
        n_out: int,
        *,
        sum_outputs: bool,
        block: int,
    ) -> None:
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

        def hook(module: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
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

        handles = [
            m.register_forward_hook(hook, with_kwargs=True) for m in self.model.modules() if rule_for(m) is not None
        ]
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
        passes = [
            torch.autograd.grad(f, outs, cot[i], retain_graph=i < k_cot - 1, allow_unused=True) for i in range(k_cot)
        ]
        per_out = [[torch.zeros_like(t) if p[j] is None else p[j] for p in passes] for j, t in enumerate(outs)]
        if k_cot == 1:  # a view: no copy of the signal
            return [pc.signal(per_out[slot[id(pc.out)]][0]).unsqueeze(0) for pc in pieces]
        return [torch.stack([pc.signal(g) for g in per_out[slot[id(pc.out)]]]) for pc in pieces]

    def _group(self, pieces: list[Piece], signals: list[torch.Tensor], *, all_vec: bool) -> list[Term]:
        """One term per (parameter, rows): its calls' positions concatenated, so cross-call terms count."""
        groups: dict[GroupKey, list[Member]] = {}
        for pc, g in zip(pieces, signals):
            groups.setdefault((self.names[id(pc.param)], rows_key(pc)), []).append((pc, g))
        fused = self._fused_biases(groups)
        self._add_bias_groups(groups, fused)
        terms: list[Term] = []
        for (name, rows), members in groups.items():
            if members[0][0].kind == "diag":
                terms.append(_diag_term(name, rows, members))
            else:
                terms.extend(self._weight_terms(name, rows, members, fused.get((name, rows)), all_vec=all_vec))
        return terms

    def _bias_key(self, pc: Piece, rows: tuple[int, int]) -> GroupKey:
        assert pc.bias is not None
        return self.names[id(pc.bias[0])], rows

    def _fused_biases(self, groups: dict[GroupKey, list[Member]]) -> dict[GroupKey, tuple[str, float]]:
        """Weight groups whose every call carries the same bias, used by no other group: the bias shares the
        weight's signal Gram (``key -> (bias name, bias multiplier)``)."""
        bias_users: dict[GroupKey, set[tuple[GroupKey, float]]] = {}
        for key, members in groups.items():
            for pc, _ in members:
                if pc.bias is not None:
                    bias_users.setdefault(self._bias_key(pc, key[1]), set()).add((key, pc.bias[1]))
        fused: dict[GroupKey, tuple[str, float]] = {}
        for key, members in groups.items():
            first = members[0][0].bias
            if first is None or any(
                q.bias is None or q.bias[0] is not first[0] or q.bias[1] != first[1] for q, _ in members
            ):
                continue
            bkey = self._bias_key(members[0][0], key[1])
            if len(bias_users[bkey]) == 1 and bkey not in groups:
                fused[key] = (bkey[0], first[1])
        return fused

    def _add_bias_groups(self, groups: dict[GroupKey, list[Member]], fused: dict[GroupKey, tuple[str, float]]) -> None:
        """Give every bias not fused with its weight a ``"diag"`` group of its own."""
        for key, members in list(groups.items()):
            if key in fused:
                continue
            for pc, g in members:
                if pc.bias is not None:
                    groups.setdefault(self._bias_key(pc, key[1]), []).append((_bias_piece(pc), g))

    def _weight_terms(
        self, name: str, rows: tuple[int, int], members: list[Member], bias: tuple[str, float] | None, *, all_vec: bool
    ) -> list[Term]:
        """The term(s) of an ``"outer"`` or ``"index"`` group, in the form the cost model chooses."""
        kind = members[0][0].kind
        param = members[0][0].param
        mults = {pc.mult for pc, _ in members}
        common = (mults.pop() if len(mults) == 1 else 1.0) or 1.0  # else folded into each call's a or G
        k_cot, _, _, m = members[0][1].shape
        s = sum(g.shape[2] for _, g in members)
        width = param.shape[0] if kind == "index" else param.numel() // param.shape[0]
        g = cat([g if kind == "outer" or pc.mult == common else g * pc.mult for pc, g in members], 2)
        gram_flops, vec_flops = cost_model(k_cot, s, m, width, self.block, index=kind == "index")
        per_sample = all_vec or gram_flops > vec_flops
        if COST_LOG is not None and not all_vec:
            COST_LOG.append(
                dict(
                    name=name,
                    rows=rows,
                    kind=kind,
                    cotangents=k_cot,
                    positions=s,
                    m=m,
                    k=width,
                    block=self.block,
                    gram_of_grams_flops=gram_flops,
                    per_sample_flops=vec_flops,
                    choice="per_sample" if per_sample else "gram_of_grams",
                )
            )
        if per_sample:
            with record_function(f"ntkcheck.per_sample:{name}"):
                if kind == "index":
                    vec = scatter_per_sample(g, cat([pc.required_activations() for pc, _ in members], 1), width)
                else:
                    vec = weighted_sum(
                        [outer_per_sample(pc, gp) for pc, gp in members], [pc.mult / common for pc, _ in members]
                    )
            terms: list[Term] = [Vec(name, vec, rows, common)]
            if bias:
                terms.append(Vec(bias[0], g.sum(2), rows, bias[1]))
            return terms
        with record_function(f"ntkcheck.gram_of_grams:{name}"):
            a = cat(
                [
                    pc.required_activations() * (pc.mult / common)
                    if kind == "outer" and pc.mult != common
                    else pc.required_activations()
                    for pc, _ in members
                ],
                1,
            )
        return [Gram(name, g, a, kind == "index", bias[0] if bias else None, bias[1] ** 2 if bias else 0.0, common**2)]

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
                kept.append(_bias_piece(pc, bias))
        return kept

    def features(self, x: torch.Tensor, *, all_vec: bool = False) -> list[Term]:
        """Features of a block of rows: one term per parameter group (see the module docstring).

        Formed :data:`FEATURE_ROWS` rows at a time (rows are independent: each row's features come from its
        own forward and backward signals), written into tensors of the whole block."""
        if x.shape[0] <= FEATURE_ROWS:
            return self._chunk_features(x, all_vec=all_vec)
        n = x.shape[0]
        out: list[Term] = []
        for lo in range(0, n, FEATURE_ROWS):
            hi = min(lo + FEATURE_ROWS, n)
            part = self._chunk_features(x[lo:hi], all_vec=all_vec)
            if not out:
                out = [alloc_rows(t, n) for t in part]
            for whole, piece in zip(out, part):
                whole.g[:, lo:hi] = piece.g
                if isinstance(whole, Gram) and isinstance(piece, Gram):
                    whole.a[lo:hi] = piece.a
        return out

    def _chunk_features(self, x: torch.Tensor, *, all_vec: bool) -> list[Term]:
        with record_function("ntkcheck.forward:*"):
            f, pieces, declined = self._capture(x)
        fresh = {n: why for n, why in declined.items() if n not in self.uncovered}
        if fresh:
            raise RuntimeError(
                f"layer rules declined calls for {sorted(fresh)} on a block of {x.shape[0]} rows "
                "after serving them on the probe; use method='jacobian'"
            )
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
            assert isinstance(t, Vec), "all_vec=True gives per-sample gradients only"
            p = self.params[t.name]
            full = rule_grads.setdefault(t.name, torch.zeros(xp.shape[0], p.numel(), dtype=f.dtype, device=f.device))
            lo, hi = t.rows if t.rows is not None else (0, p.shape[0] if p.ndim else 1)
            width = p.numel() // (p.shape[0] if p.ndim else 1)
            full[:, lo * width : hi * width] += t.g[0] * t.scale
        names = list(rule_grads)
        tol = PROBE_TOL.get(f.dtype, 1e-2)
        worst = {n: 0.0 for n in names}
        for i in range(xp.shape[0]):
            with torch.enable_grad():
                out = self.forward(self.model, xp[i : i + 1])
                grads = torch.autograd.grad(
                    (out * cot[0, i : i + 1]).sum(), [self.params[n] for n in names], allow_unused=True
                )
            true = [torch.zeros_like(self.params[n]) if g is None else g for n, g in zip(names, grads)]
            # a parameter whose gradient is rounding noise (a key bias under softmax) is judged on the row's scale
            floor = 1e-2 * float(torch.stack([(g * g).sum() for g in true]).sum().sqrt()) + 1e-300
            for n, g in zip(names, true):
                err = float((rule_grads[n][i] - g.reshape(-1)).norm()) / max(float(g.norm()), floor)
                worst[n] = max(worst[n], err)
        for n, err in worst.items():
            if err > tol:
                self.uncovered[n] = f"its rule's per-sample gradient is off by {err:.2g} (relative) on a probe"

    # -- tiles ---------------------------------------------------------------------------------------------

    def tiles(
        self, f1: list[Term], f2: list[Term], *, names: list[str], trace: bool, per_layer: bool
    ) -> dict[str, torch.Tensor]:
        """Kernel tiles (B1, B2, K', K') (K' = 1 for ``trace``): per parameter, or their sum as ``"total"``."""
        return feature_tiles(f1, f2, names=names, trace=trace, per_layer=per_layer)
