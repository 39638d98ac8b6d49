"""Any input, any output: images, flattened inputs reshaped inside the model, token ids, dict outputs,
no_grad/inference_mode, tied weights exact; batch-coupled, scalar and row-less outputs refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkcheck as nk

D = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def explicit_jjt(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Theta[n, m, o, p] = <d f_o(x_n), d f_p(x_m)> with every row differentiated alone by autograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for n in range(x.shape[0]):
        out = model(x[n : n + 1]).reshape(-1)
        for o in range(out.shape[0]):
            g = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if t is None else t).flatten() for p, t in zip(params, g)]))
    jac = torch.stack(rows)
    o = jac.shape[0] // x.shape[0]
    k = (jac @ jac.T).view(x.shape[0], o, x.shape[0], o).permute(0, 2, 1, 3)
    return k[:, :, 0, 0] if o == 1 else k


class TutorialCNN(nn.Module):
    """The torch.func NTK tutorial's CNN (three 3x3 convolutions, flatten, linear), narrowed for speed."""

    def __init__(self, channels: int = 4, size: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, channels, (3, 3))
        self.conv2 = nn.Conv2d(channels, channels, (3, 3))
        self.conv3 = nn.Conv2d(channels, channels, (3, 3))
        self.fc = nn.Linear(channels * (size - 6) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).relu()
        x = self.conv2(x).relu()
        x = self.conv3(x)
        return self.fc(x.flatten(1))


def test_images_through_the_tutorial_cnn():
    model = TutorialCNN().to(D)
    x = torch.randn(3, 3, 16, 16, generator=gen(), dtype=D)
    k = nk.ntk(model, x)
    assert k.shape == (3, 3, 10, 10)
    assert rel(k, explicit_jjt(model, x)) <= 1e-10
    assert rel(k, nk.ntk(model, x, method="jacobian")) <= 1e-10


class ConvFirstFlat(nn.Module):
    """Flattened 4x4 images reshaped inside forward, a convolution first, a Linear(8, 2) head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x.reshape(-1, 1, 4, 4))).flatten(1))


def test_conv_first_model_fed_flattened_input():
    model = ConvFirstFlat().to(D)
    x = torch.randn(4, 16, generator=gen(1), dtype=D)
    assert rel(nk.ntk(model, x), explicit_jjt(model, x)) <= 1e-10
    jac = nk.jacobian(model, x)
    assert jac.shape == (8, sum(p.numel() for p in model.parameters()))


def test_conv_first_model_with_wrong_input_names_the_argument():
    model = ConvFirstFlat().to(D)
    with pytest.raises(ValueError, match=r"x1 \(rows of shape \(15,\).*does not fit the model"):
        nk.ntk(model, torch.randn(4, 15, dtype=D))
    with pytest.raises(ValueError, match=r"^x .*does not fit the model"):
        nk.jacobian(model, torch.randn(4, 15, dtype=D))


def test_integer_token_ids():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(6, 3), nn.Flatten(), nn.Tanh(), nn.Linear(9, 2)).to(D)
    t = torch.tensor([[0, 5, 5], [1, 0, 2], [5, 5, 5], [3, 3, 1]])
    k = nk.ntk(model, t)
    assert k.dtype == D and k.shape == (4, 4, 2, 2)
    assert rel(k, explicit_jjt(model, t)) <= 1e-10
    k12 = nk.ntk(model, t[:2], t[2:])
    assert rel(k12, k[:2, 2:]) <= 1e-12


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(torch.tanh(x)), "aux": x.sum()}


def test_dict_output_with_output_fn():
    model = DictOutput().to(D)
    x = torch.randn(4, 3, generator=gen(2), dtype=D)
    pick = lambda out: out["logits"]  # noqa: E731
    for method in ("auto", "jacobian", "ntvp"):
        k = nk.ntk(model, x, method=method, output_fn=pick)
        assert rel(k, nk.ntk(model.lin, torch.tanh(x))) <= 1e-12, method
    with pytest.raises(TypeError, match="output is a dict.*output_fn"):
        nk.ntk(model, x)


def test_output_fn_must_be_callable():
    with pytest.raises(TypeError, match="output_fn must be callable"):
        nk.ntk(DictOutput().to(D), torch.zeros(2, 3, dtype=D), output_fn="logits")


@pytest.mark.parametrize("guard", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(guard):
    mlp = nk.MLP(3, [5], 2, generator=gen(), dtype=D)
    cnn = TutorialCNN(2, 8).to(D)
    x = torch.randn(3, 3, generator=gen(3), dtype=D)
    img = torch.randn(3, 3, 8, 8, generator=gen(4), dtype=D)
    expected = (nk.ntk(mlp, x), nk.ntk(cnn, img))
    with guard():
        xg, imgg = x.clone(), img.clone()
        got = (nk.ntk(mlp, xg), nk.ntk(cnn, imgg), nk.ntk(mlp, xg, method="jacobian"))
    assert rel(got[0], expected[0]) <= 1e-13 and rel(got[1], expected[1]) <= 1e-13
    assert rel(got[2], expected[0]) <= 1e-10


class TiedTwoModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


def tied_sequential() -> nn.Module:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    return nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), nn.Linear(4, 2)).to(D)


@pytest.mark.parametrize("method", ["auto", "layerwise", "ntvp", "jacobian"])
@pytest.mark.parametrize("build", [TiedTwoModules, tied_sequential])
def test_tied_weights_exact(build, method):
    """One weight in two modules: its per-sample gradient sums over both calls, cross terms included."""
    model = build().to(D)
    x = torch.randn(5, 4, generator=gen(5), dtype=D)
    expected = explicit_jjt(model, x)
    assert rel(nk.ntk(model, x, method=method), expected) <= 1e-12
    parts = nk.ntk(model, x, method=method, per_layer=True)
    assert rel(sum(parts.values()), expected) <= 1e-12


class BatchCentred(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) - self.lin(x).mean(0)


@pytest.mark.parametrize("method", ["auto", "layerwise", "jacobian", "ntvp"])
def test_batch_coupled_output_refused(method):
    x = torch.randn(4, 3, generator=gen(6), dtype=D)
    with pytest.raises(ValueError, match=r"couples the rows of a batch.*mean over dim 0.*method='jacobian' would not"):
        nk.ntk(BatchCentred().to(D), x, method=method)


def test_batch_norm_in_training_mode_refused_with_the_fix():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).to(D)
    x = torch.randn(4, 3, generator=gen(7), dtype=D)
    with pytest.raises(ValueError, match=r"couples the rows.*BatchNorm in training mode.*model\.eval\(\)"):
        nk.ntk(model, x)
    model.eval()
    assert rel(nk.ntk(model, x), nk.ntk(model, x, method="jacobian")) <= 1e-10


class ScalarOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).sum()


@pytest.mark.parametrize("method", ["auto", "jacobian"])
def test_scalar_output_refused(method):
    with pytest.raises(ValueError, match=r"0-d scalar.*one output row per input row"):
        nk.ntk(ScalarOutput().to(D), torch.randn(4, 3, dtype=D), method=method)


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).T


def test_output_without_n_rows_refused():
    with pytest.raises(ValueError, match=r"one row per input row \(N = \d\), got shape"):
        nk.ntk(Transposed().double(), torch.randn(4, 3, dtype=D))


@pytest.mark.parametrize("output", ["full", "trace", "sum"])
def test_output_modes_against_their_definitions(output):
    model = nk.CNN(2, [3], 3, generator=gen(), dtype=D)
    x = torch.randn(3, 2, 5, 5, generator=gen(8), dtype=D)
    full = explicit_jjt(model, x)
    expected = {"full": full, "trace": full.diagonal(dim1=2, dim2=3).sum(-1), "sum": full.sum((2, 3)) / 3}[output]
    for method in ("auto", "jacobian"):
        assert rel(nk.ntk(model, x, method=method, output=output), expected) <= 1e-10, method


@pytest.mark.parametrize("output", ["full", "trace", "sum"])
def test_scalar_output_models_keep_n1_by_n2(output):
    model = nk.MLP(3, [4], 1, generator=gen(), dtype=D)
    x = torch.randn(4, 3, generator=gen(9), dtype=D)
    assert nk.ntk(model, x, output=output).shape == (4, 4)


def test_unknown_output_mode_refused():
    with pytest.raises(ValueError, match="output must be one of"):
        nk.ntk(nk.MLP(3, [4], generator=gen(), dtype=D), torch.zeros(2, 3, dtype=D), output="diag")


def test_batch_norm_in_training_mode_on_one_row_names_the_fix():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).to(D)
    with pytest.raises(ValueError, match=r"x1 .*does not fit the model.*BatchNorm in training mode.*model\.eval\(\)"):
        nk.ntk(model, torch.randn(1, 3, dtype=D))
