"""Properties of a downstream project, drawn with ntkcheck's strategies and run by ntkcheck's plugin."""

import hypothesis.strategies as st
import torch
from hypothesis import given

import ntkcheck as nk
from ntkcheck.testing.strategies import architectures, datasets
from ntkcheck.testing.tolerances import tolerance


@given(arch=architectures(max_depth=2, max_width=8), data=st.data())
def test_kernel_is_symmetric_and_psd(arch, data, device, dtype):
    """Every family (MLP, ResNet, CNN, Transformer), inputs of the family's shape."""
    model = arch.build(dtype=dtype, device=device)
    x = data.draw(datasets(arch, max_n=5)).x(dtype=dtype, device=device)
    k = nk.ntk(model, x, output="trace")  # (N, N) whatever the number of outputs
    scale = torch.linalg.matrix_norm(k)
    assert torch.linalg.matrix_norm(k - k.T) <= tolerance("symmetry", dtype) * scale
    assert torch.linalg.eigvalsh(k).min() >= -tolerance("psd", dtype) * scale


@given(arch=architectures(families=("mlp",), max_depth=3, max_width=16, max_out=1), data=st.data())
def test_per_layer_kernels_sum_to_the_kernel(arch, data, device, dtype):
    """MLPs only, one output: the per-layer kernels of the trainable parameters add up to the NTK."""
    model = arch.build(dtype=dtype, device=device)
    x = data.draw(datasets(arch, max_n=6)).x(dtype=dtype, device=device)
    k, parts = nk.ntk(model, x), nk.ntk(model, x, per_layer=True)
    total = sum(parts.values())
    assert torch.linalg.matrix_norm(total - k) <= tolerance("per_layer_sum", dtype) * torch.linalg.matrix_norm(k)
