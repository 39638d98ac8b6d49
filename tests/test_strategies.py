"""The public strategies: architectures of every family, their inputs, and reproducible descriptions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import ntkcheck as nk
from ntkcheck.testing.strategies import (
    FAMILY_ORDER,
    Arch,
    Dataset,
    architectures,
    dataset_for,
    datasets,
    initial_functions,
    inputs,
    tokens,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_SHRINK = settings(phases=[Phase.generate], database=None, max_examples=200)


def first(strategy, condition=lambda a: True):
    """The first generated value meeting ``condition`` (no shrinking: quick)."""
    return find(strategy, condition, settings=NO_SHRINK)


CLASSES = {"mlp": nk.MLP, "cnn": nk.CNN, "resnet": nk.ResNet, "transformer": nk.Transformer}


@FAST
@given(arch=architectures(frozen=None, max_out=3), data=st.data())
def test_every_draw_builds_and_describes_its_model(arch, data):
    """The model is of the drawn family, ``repr`` rebuilds the description, n_params counts the trainable
    parameters, frozen units are frozen (never all of them), and the inputs have the family's shape."""
    model = arch.build()
    assert isinstance(model, CLASSES[arch.family])
    assert eval(repr(arch)) == arch
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert arch.n_params() == trainable > 0
    units = arch.units(model)
    assert len(units) == arch.n_units()
    for i, unit in enumerate(units):
        assert all(p.requires_grad == (i not in arch.frozen) for p in unit.parameters())
    assert len(arch.frozen) < len(units)
    if arch.n_params() <= arch.out_features:  # a width-1 MLP with its other layers frozen: no dataset fits
        return
    ds = data.draw(datasets(arch, max_n=6))
    x = ds.x()
    assert tuple(x.shape) == (ds.n, *arch.in_shape)
    assert (x.dtype == torch.int64) == (arch.family == "transformer" and arch.vocab > 0)
    assert len(torch.unique(x.reshape(ds.n, -1), dim=0)) == ds.n  # distinct inputs
    assert ds.n * arch.out_features < arch.n_params()
    with torch.no_grad():
        assert tuple(model(x).shape) == (ds.n, arch.out_features)
        assert tuple(model(ds.x_test(3)).shape)[1:] == (arch.out_features,)


@pytest.mark.parametrize("family", FAMILY_ORDER)
def test_each_family_is_drawn_and_selectable(family):
    arch = first(architectures(families=(family,), frozen=True))
    assert arch.family == family and arch.frozen
    assert first(architectures(), lambda a: a.family == family).family == family


@pytest.mark.parametrize("family", ["cnn", "resnet"])
def test_sequences_are_drawn_for_convolutional_families(family):
    """``dims=1``: Conv1d networks on (N, C, L) sequences, with inputs of that shape."""
    arch = first(architectures(families=(family,)), lambda a: a.dims == 1 and a.image_size > 0)
    model = arch.build()
    assert len(arch.in_shape) == 2 and any(isinstance(m, nk.models.Conv1d) for m in model.modules())
    x = dataset_for(arch, 0, 3).x()
    assert tuple(x.shape) == (3, *arch.in_shape)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_layer_norm_resnets_are_drawn(placement):
    arch = first(architectures(families=("resnet",)), lambda a: a.layer_norm == placement)
    assert arch.build().norm == placement


def test_draws_shrink_toward_the_smallest_family_and_size():
    assert find(architectures(), lambda a: True).family == "mlp"
    smallest = find(architectures(families=("transformer",)), lambda a: True)
    assert (smallest.d_model, smallest.heads, smallest.blocks, smallest.seq_len) == (4, 1, 1, 2)


def test_mlp_only_draws_keep_the_mlp_description():
    """``families=("mlp",)`` draws no family choice: its descriptions print as before (MLP fields only)."""
    arch = first(architectures(families=("mlp",), max_depth=2), lambda a: len(a.widths) == 2)
    assert arch.family == "mlp" and "family" not in repr(arch) and "d_model" not in repr(arch)
    assert isinstance(arch.build(), nk.MLP)


def test_unknown_families_are_refused():
    with pytest.raises(ValueError, match="families"):
        first(architectures(families=("rnn",)))
    with pytest.raises(ValueError, match="families"):
        first(architectures(families=()))


def test_tokens_are_distinct_ids_in_range():
    t = tokens(3, 9, 2, 3)
    assert t.dtype == torch.int64 and t.shape == (9, 2) and int(t.min()) >= 0 and int(t.max()) < 3
    assert len(torch.unique(t, dim=0)) == 9
    assert torch.equal(t, tokens(3, 9, 2, 3))
    with pytest.raises(ValueError, match="distinct"):
        tokens(0, 10, 2, 3)


def test_dataset_inputs_per_family():
    images = Dataset(1, 4, 2, 1, (2, 5, 5))
    assert images.x().shape == (4, 2, 5, 5) and images.x_test(3).shape == (3, 2, 5, 5)
    assert Dataset(1, 4, 3).x().shape == (4, 3)
    assert torch.equal(Dataset(1, 4, 3).x(), inputs(1, 4, 3))  # rows as before
    seq = Dataset(2, 4, 3, 2, (3,), vocab=5)
    assert seq.x().shape == (4, 3) and seq.y().shape == (4, 2)


@pytest.mark.parametrize("family", FAMILY_ORDER)
def test_reproduction_snippet_rebuilds_the_example(family):
    from ntkcheck.testing.properties._common import reproduce

    arch = first(architectures(families=(family,), frozen=True))
    ds = dataset_for(arch, 5, 3)
    code = reproduce(arch, x=f"{ds!r}.x()")
    scope: dict = {}
    exec(code, scope)
    model = arch.build()
    assert all(torch.equal(p, q) for p, q in zip(scope["model"].state_dict().values(), model.state_dict().values()))
    assert torch.equal(scope["x"], ds.x())


@pytest.mark.parametrize("family", FAMILY_ORDER)
def test_initial_functions_take_every_input_shape(family):
    arch = first(architectures(families=(family,)))
    x = dataset_for(arch, 2, 3).x()
    h = first(initial_functions(int(torch.tensor(arch.in_shape).prod()), 2))
    assert h(x).shape == (3, 2) and h(x).is_floating_point()


def test_explicit_descriptions_of_every_family_build():
    common = dict(
        in_features=2,
        out_features=2,
        activation="relu",
        bias=True,
        parametrization="ntk",
        weight_std=1.0,
        bias_std=0.1,
        seed=0,
    )
    for arch in (
        Arch(widths=(3, 4), family="cnn", image_size=5, stride=2, padding=1, readout="flatten", **common),
        Arch(widths=(4,), family="resnet", blocks=2, branch_scale=0.5, **common),
        Arch(widths=(4,), family="resnet", image_size=4, **common),
        Arch(widths=(4,), family="transformer", d_model=8, heads=2, seq_len=3, vocab=4, norm="post", **common),
        Arch(widths=(4,), family="transformer", d_model=4, seq_len=3, **common),
    ):
        model = arch.build()
        x = dataset_for(arch, 1, 3).x()
        assert nk.ntk(model, x).shape == (3, 3, 2, 2)
