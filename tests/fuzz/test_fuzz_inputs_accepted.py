"""Unusual inputs to networks, transforms and analytic kernels that are accepted: each gives the value the
documentation promises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fuzz_input_builders import F64, _mlp, _net, _x
from torch import nn

import ntkcheck as nk

# ---- unusual inputs that are accepted ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, dtype",
    [("float32", torch.float32), ("float64", F64), ("float16", torch.float16), ("bfloat16", torch.bfloat16)],
)
def test_dtype_names_build_that_dtype(name: str, dtype: torch.dtype) -> None:
    by_name = _mlp(dtype=name, generator=torch.Generator().manual_seed(0))
    by_dtype = _mlp(dtype=dtype, generator=torch.Generator().manual_seed(0))
    assert all(p.dtype == dtype for p in by_name.parameters())
    assert all(torch.equal(p, q) for p, q in zip(by_name.parameters(), by_dtype.parameters()))


def test_meta_device_network_has_shapes_and_no_values() -> None:
    model = _mlp(device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert [tuple(p.shape) for p in model.parameters()] == [(4, 3), (4,), (1, 4), (1,)]


def test_linear_model_without_hidden_layers_has_the_analytic_kernel_of_its_map() -> None:
    """widths=[]: f(x) = weight_std/sqrt(d) W x + bias_std b, so Theta = Sigma = weight_std^2 <x, x'>/d + bias_std^2."""
    model = nk.MLP(3, [], weight_std=1.3, bias_std=0.4, dtype=F64)
    x = _x()
    expected = 1.3**2 * (x @ x.T).numpy() / 3 + 0.4**2
    np.testing.assert_allclose(nk.analytic_ntk(model, x).numpy(), expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(nk.analytic_nngp(model, x).numpy(), expected, rtol=1e-14, atol=1e-15)


def test_float32_inputs_give_the_float64_kernel_to_float32_precision() -> None:
    """The analytic kernel is computed in float64 whatever x1's dtype; only the result is rounded."""
    model = _net()
    x = _x().float()
    reference = nk.analytic_ntk(model, x.double())
    result = nk.analytic_ntk(model, x)
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.double().numpy(), reference.numpy(), rtol=2 * np.finfo(np.float32).eps)


def test_asi_passes_keyword_arguments_and_stays_zero_with_dropout() -> None:
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.drop = nn.Linear(3, 2).double(), nn.Dropout(0.3)

        def forward(self, x: torch.Tensor, *, gate: torch.Tensor) -> torch.Tensor:
            return self.drop(self.linear(x)) * gate

    torch.manual_seed(0)
    net = nk.asi(Gated()).train()
    with torch.no_grad():
        assert float(net(_x(), gate=torch.full((1, 2), 3.0, dtype=F64)).abs().max()) == 0.0
