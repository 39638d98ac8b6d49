"""Mutants of the transforms area (see :mod:`ntkcheck.testing.mutants`): ASI, RND, the doubling trick."""

from __future__ import annotations

import copy

import torch

from ntkcheck.testing.mutants import Mutant


def _unfrozen(module: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def _asi_unfreezes(original):
    from ntkcheck.models.transforms import AntiSymmetric

    def asi(model):
        original(model)  # keep the argument checks
        return AntiSymmetric(_unfrozen(model), _unfrozen(model))

    return asi


def _asi_scale_one(original):
    from ntkcheck.models.transforms import AntiSymmetric

    def asi(model):
        net = original(model)
        return AntiSymmetric(net.plus, net.minus, scale=1.0)

    return asi


def _asi_float32_second_branch(original):
    def asi(model):
        net = original(model)
        with torch.no_grad():
            for p in net.minus.parameters():
                p.copy_(p.float().to(p.dtype))
        return net

    return asi


def _rnd_reuses_theta(original):
    from ntkcheck.models.transforms import AntiSymmetric

    def rnd(model, generator=None):
        net = original(model, generator)
        return AntiSymmetric(net.plus, copy.deepcopy(net.plus), net.scale)

    return rnd


def _rnd_unfreezes(original):
    from ntkcheck.models.transforms import AntiSymmetric

    def rnd(model, generator=None):
        net = original(model, generator)
        return AntiSymmetric(_unfrozen(net.plus), _unfrozen(net.minus), net.scale)

    return rnd


def _double_negates_hidden(original):
    def double_last_layer(mlp):
        doubled = original(mlp)
        hidden, out = doubled.layers[-2], doubled.layers[-1]
        m = hidden.weight.shape[0] // 2
        with torch.no_grad():
            hidden.weight[m:].neg_()
            if hidden.bias is not None:
                hidden.bias[m:].neg_()
            out.weight[:, m:].neg_()
        return doubled

    return double_last_layer


def _double_keeps_output_bias(original):
    from ntkcheck.models import Linear

    def double_last_layer(mlp):
        doubled = original(mlp)
        out, bias = doubled.layers[-1], mlp.layers[-1].bias
        if bias is not None:
            doubled.layers[-1] = Linear(
                out.weight.detach().clone(),
                bias.detach().clone(),
                weight_mult=out.weight_mult,
                bias_mult=mlp.layers[-1].bias_mult,
            )
        return doubled

    return double_last_layer


def _double_unfreezes(original):
    def double_last_layer(mlp):
        doubled = original(mlp)
        for layer in doubled.layers[-2:]:
            layer.requires_grad_(True)
        return doubled

    return double_last_layer


def _merge_drops_minus(original):
    def merge_branches(per_param):
        return original({k: v for k, v in per_param.items() if k.startswith("plus.")})

    return merge_branches


MUTANTS: list[Mutant] = [
    Mutant(
        "asi_unfreezes_frozen_parameters",
        "asi() copies both branches with requires_grad=True on every parameter (a frozen layer of the "
        "original becomes trainable, adding its kernel: k_ASI != k)",
        "ntkcheck.models.transforms:asi",
        _asi_unfreezes,
    ),
    Mutant(
        "asi_scale_one",
        "asi() combines the branches with scale 1 instead of sqrt(2)/2 (kernel 2k)",
        "ntkcheck.models.transforms:asi",
        _asi_scale_one,
    ),
    Mutant(
        "asi_second_branch_through_float32",
        "asi()'s second branch is copied through a float32 buffer: theta' = float32(theta) != theta, "
        "so the output at init is not 0",
        "ntkcheck.models.transforms:asi",
        _asi_float32_second_branch,
    ),
    Mutant(
        "rnd_reuses_theta",
        "rnd()'s second branch is a copy of theta instead of a fresh draw (it is ASI: output 0, kernel k)",
        "ntkcheck.models.transforms:rnd",
        _rnd_reuses_theta,
    ),
    Mutant(
        "rnd_unfreezes_frozen_parameters",
        "rnd() makes every parameter of both branches trainable (a frozen layer's kernel is added)",
        "ntkcheck.models.transforms:rnd",
        _rnd_unfreezes,
    ),
    Mutant(
        "doubling_negates_hidden_weights",
        "double_last_layer() negates the second copy of W^(L-1), b^(L-1) instead of the output weights' "
        "second half (h' = W phi(z) + W phi(-z): 0 only for odd phi)",
        "ntkcheck.models.transforms:double_last_layer",
        _double_negates_hidden,
    ),
    Mutant(
        "doubling_keeps_output_bias",
        "double_last_layer() keeps the output bias b^(L) (output b^(L) at init, not 0)",
        "ntkcheck.models.transforms:double_last_layer",
        _double_keeps_output_bias,
    ),
    Mutant(
        "doubling_unfreezes_top_layers",
        "double_last_layer() builds its two new layers with requires_grad=True even where the original's "
        "layers were frozen",
        "ntkcheck.models.transforms:double_last_layer",
        _double_unfreezes,
    ),
    Mutant(
        "merge_branches_drops_minus",
        "merge_branches() keeps only the plus branch's per-layer kernels (half of each ASI layer kernel)",
        "ntkcheck.models.transforms:merge_branches",
        _merge_drops_minus,
    ),
]
