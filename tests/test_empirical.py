"""The empirical NTK: three exact methods agree, per-layer kernels sum to the total,
kernels are symmetric PSD Gram matrices, tiling is exact, bad input is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ntkcheck as nk
from ntkcheck.testing.strategies import architectures, inputs, seeds
from ntkcheck.testing.tolerances import tolerance

METHODS = ("layerwise", "jacobian", "ntvp")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_close_kernels(ks: dict[str, torch.Tensor], ref: torch.Tensor, tol: float, context: str) -> None:
    errors = {m: rel(k, ref) for m, k in ks.items()}
    assert max(errors.values()) <= tol, f"methods disagree {errors} (tol {tol}) for\n{context}"


def transform(kind: str, model: nk.MLP, seed: int) -> nn.Module:
    if kind == "asi":
        return nk.asi(model)
    if kind == "rnd":
        return nk.rnd(model, torch.Generator().manual_seed(seed))
    if kind == "double" and model.widths:
        return nk.double_last_layer(model)
    return model


@settings(deadline=None)
@given(
    arch=architectures(families=("mlp",), max_depth=4, max_width=64),
    kind=st.sampled_from(["plain", "asi", "rnd", "double"]),
    n1=st.integers(1, 6),
    n2=st.integers(1, 5),
    data_seed=seeds(),
)
def test_methods_agree_on_random_architectures(arch, kind, n1, n2, data_seed):
    """layerwise, jacobian and ntvp compute the same kernel to 1e-10 (float64), any architecture."""
    model = transform(kind, arch.build(), arch.seed)
    x1 = inputs(data_seed, n1, arch.in_features)
    x2 = inputs(data_seed + 1, n2, arch.in_features)
    context = f"{arch.snippet()}; transform={kind}; x1 = inputs({data_seed}, {n1}, {arch.in_features})"
    ks = {m: nk.ntk(model, x1, x2, method=m) for m in METHODS}
    expected_shape = (n1, n2) if arch.out_features == 1 else (n1, n2, arch.out_features, arch.out_features)
    assert ks["jacobian"].shape == expected_shape
    assert_close_kernels(ks, ks["jacobian"], tolerance("kernel_methods_agree", torch.float64), context)


@settings(deadline=None)
@given(
    arch=architectures(families=("mlp",), max_depth=3, max_width=32), method=st.sampled_from(METHODS), data_seed=seeds()
)
def test_per_layer_kernels_sum_to_total_and_match(arch, method, data_seed):
    """per_layer=True returns one kernel per named parameter; they sum to the total."""
    model = arch.build()
    x = inputs(data_seed, 5, arch.in_features)
    parts = nk.ntk(model, x, method=method, per_layer=True)
    assert list(parts) == [n for n, _ in model.named_parameters()]
    total = nk.ntk(model, x, method=method)
    assert rel(sum(parts.values()), total) <= tolerance("per_layer_sum", torch.float64)
    reference = nk.ntk(model, x, method="jacobian", per_layer=True)
    for name, k in parts.items():
        scale = float(total.norm())
        assert float((k - reference[name]).norm()) <= tolerance("kernel_methods_agree", torch.float64) * scale, name


@settings(deadline=None)
@given(arch=architectures(families=("mlp",), max_depth=3, max_width=32), data_seed=seeds())
def test_kernel_is_symmetric_psd(arch, data_seed):
    """Theta(X, X) is a Gram matrix: symmetric (in samples and outputs) and PSD."""
    model = arch.build()
    x = inputs(data_seed, 6, arch.in_features)
    k = nk.ntk(model, x, method="layerwise")
    o = arch.out_features
    flat = k.reshape(6, 6) if o == 1 else k.permute(0, 2, 1, 3).reshape(6 * o, 6 * o)
    assert float((flat - flat.T).abs().max()) <= tolerance("symmetry", torch.float64) * float(flat.abs().max())
    eig = torch.linalg.eigvalsh(flat)
    assert float(eig.min()) >= -tolerance("psd", torch.float64) * max(float(eig.max()), 1e-300)


def test_kernel_equals_explicit_jacobian_gram():
    """Against the definition: Theta = J J^T with J built column by column by autograd."""
    gen = torch.Generator().manual_seed(3)
    model = nk.MLP(3, [4, 5], 2, activation="tanh", generator=gen, dtype=torch.float64)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    rows = []
    for n in range(4):
        for o in range(2):
            g = torch.autograd.grad(model(x[n : n + 1])[0, o], list(model.parameters()))
            rows.append(torch.cat([t.flatten() for t in g]))
    jac = torch.stack(rows)  # row n*O + o
    expected = (jac @ jac.T).view(4, 2, 4, 2).permute(0, 2, 1, 3)
    for m in METHODS:
        assert rel(nk.ntk(model, x, method=m), expected) <= 1e-12, m


# budgets that force several row blocks for this model (features of one row: ~1.7 kB layerwise,
# ~18 kB with a per-sample Jacobian)
TILING_BUDGETS = {"layerwise": (60_000, 100_000), "jacobian": (400_000, 900_000), "ntvp": (400_000, 900_000)}


@pytest.mark.parametrize("method,budget", [(m, b) for m in METHODS for b in TILING_BUDGETS[m]])
def test_tiled_kernel_equals_single_block(method, budget):
    """A small memory budget forces row blocks (and mirrored tiles); the result is unchanged."""
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(4, [16, 16], 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(23, 4, generator=gen, dtype=torch.float64)
    for a, b in ((x1, x2), (x1, None)):
        full = nk.ntk(model, a, b, method=method)
        tiled = nk.ntk(model, a, b, method=method, memory_budget=budget)
        assert rel(tiled, full) <= 1e-14


def test_kernel_too_large_names_the_size():
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(2, [8], generator=gen)
    x = torch.randn(300, 2, generator=gen)
    with pytest.raises(nk.KernelMemoryError, match=r"needs .* GiB"):
        nk.ntk(model, x, memory_budget=100_000)


def test_frozen_parameters_do_not_count():
    """Only trainable parameters enter the kernel: freezing all but the last layer gives its kernel."""
    gen = torch.Generator().manual_seed(1)
    model = nk.MLP(3, [6, 6], generator=gen, dtype=torch.float64)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    parts = nk.ntk(model, x, per_layer=True)
    for layer in model.layers[:-1]:
        layer.requires_grad_(False)
    last = parts["layers.2.weight"] + parts["layers.2.bias"]
    for m in METHODS:
        assert rel(nk.ntk(model, x, method=m), last) <= 1e-12, m


def test_plain_sequential_is_served_by_layerwise():
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 2)).double()
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    assert rel(nk.ntk(model, x, method="layerwise"), nk.ntk(model, x, method="jacobian")) <= 1e-12


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tanh(self.lin(x))).sum(dim=1, keepdim=True)


class _RawParameter(nn.Module):
    """A parameter used outside any layer: no rule serves it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) * self.scale


def test_layer_called_twice_is_exact_in_every_method():
    """A layer called twice in one forward pass: the rules sum over both calls (cross terms included)."""
    model = _Shared().double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = nk.ntk(model, x, method="jacobian")
    for m in ("auto", "layerwise", "ntvp"):
        assert rel(nk.ntk(model, x, method=m), ref) <= 1e-12, m


def test_parameter_without_rule_refused_by_layerwise_and_served_by_auto():
    model = _RawParameter().double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(nk.LayerwiseUnsupportedError, match=r"scale: no layer rule serves it"):
        nk.ntk(model, x, method="layerwise")
    ref = nk.ntk(model, x, method="jacobian", per_layer=True)
    got = nk.ntk(model, x, per_layer=True)
    assert all(rel(got[n], ref[n]) <= 1e-12 for n in ref)


def test_reused_layer_in_sequential_is_exact():
    lin = nn.Linear(3, 3).double()
    model = nn.Sequential(lin, nn.Tanh(), lin)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert rel(nk.ntk(model, x, method="layerwise"), nk.ntk(model, x, method="jacobian")) <= 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_float32_inputs_give_float32_kernel(method):
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(3, [8], generator=gen, dtype=torch.float32)
    x = torch.randn(4, 3, generator=gen)
    k = nk.ntk(model, x, method=method)
    assert k.dtype == torch.float32 and k.device == x.device


# ---- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def small():
    gen = torch.Generator().manual_seed(0)
    return nk.MLP(3, [4], generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)


def test_nan_input_refused(small):
    model, x = small
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x1 contains 1 NaN"):
        nk.ntk(model, x)


def test_inf_in_x2_refused(small):
    model, x = small
    x2 = x.clone()
    x2[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x2 contains"):
        nk.ntk(model, x, x2)


def test_mismatched_features_refused(small):
    """Inputs are checked by running the model on a probe: the error names the argument and the model's complaint."""
    model, x = small
    with pytest.raises(
        ValueError, match=r"x1 \(rows of shape \(2,\).*does not fit the model.*x must have shape \(N, 3\)"
    ):
        nk.ntk(model, x[:, :2])
    with pytest.raises(ValueError, match=r"x2 must have x1's row shape \(3,\)"):
        nk.ntk(model, x, torch.zeros(2, 4, dtype=torch.float64))


def test_wrong_rank_refused(small):
    model, x = small
    with pytest.raises(ValueError, match=r"x1 \(rows of shape \(\)"):
        nk.ntk(model, x[0])
    with pytest.raises(ValueError, match=r"x1 must have shape \(N, \.\.\.\)"):
        nk.ntk(model, x[0, 0])


def test_unknown_method_refused(small):
    model, x = small
    with pytest.raises(ValueError, match="method must be one of"):
        nk.ntk(model, x, method="fast")


def test_dtype_mismatch_refused(small):
    model, x = small
    with pytest.raises(
        ValueError,
        match=r"x1 must match the model's parameters \(torch.float64 on cpu\), "
        r"got torch.float32 on cpu",
    ):
        nk.ntk(model, x.float())
    with pytest.raises(ValueError, match=r"x2 must have the dtype of x1 \(torch.float64\), got torch.float32"):
        nk.ntk(model, x, x.float())


def test_non_module_refused(small):
    _, x = small
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        nk.ntk(lambda t: t, x)


def test_overflowing_model_raises_instead_of_nan():
    gen = torch.Generator().manual_seed(0)
    model = nk.MLP(2, [4, 4], parametrization="standard", weight_std=1e200, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="non-finite"):
        nk.ntk(model, x)
