"""Tests of ntkcheck.kernels.analytic on CNN, ResNet, sequence (Conv1d) and LayerNorm networks.

Everything runs in float64 with explicit torch.Generator seeds, so the statistical
tests are deterministic; their tolerances are derived in the comments.
"""

from __future__ import annotations

import pytest
import torch
from _analytic_cases import DTYPE, make_inputs, make_mlp, within_standard_errors

import ntkcheck as nk
import ntkcheck.kernels.analytic as analytic
from ntkcheck.kernels.analytic import analytic_nngp, analytic_ntk
from ntkcheck.models import CNN, ResNet


def output_covariances(models: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """f(X) f(X)^T / O for each network (O outputs, mean 0 at init): unbiased estimates of its NNGP."""
    with torch.no_grad():
        return torch.stack([(f := m(x)) @ f.T / f.shape[1] for m in models])


def images(n: int, channels: int = 2, size: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g, dtype=DTYPE)


# ---------------------------------------------------------------- convolutions and residual networks

CNN_CONFIGS = {
    "same-gap-1conv": dict(channels=1, kernel_size=3, padding="same"),
    "valid-stride2-gap-2conv": dict(channels=2, kernel_size=2, stride=2, padding="valid"),
    "dilated-pad1-flatten-1conv": dict(
        channels=1, kernel_size=3, padding=1, dilation=2, readout="flatten", image_size=6
    ),
    "stride2-pad1-flatten-2conv": dict(channels=2, kernel_size=3, stride=2, padding=1, readout="flatten", image_size=6),
    "standard-same-gap-1conv": dict(channels=1, kernel_size=3, padding="same", parametrization="standard"),
}


def make_cnn(config: str, width: int, out: int = 1, seed: int = 0) -> CNN:
    kw = dict(CNN_CONFIGS[config])
    return CNN(
        2,
        [width] * kw.pop("channels"),
        out,
        weight_std=1.3,
        bias_std=0.2,
        dtype=DTYPE,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("config", sorted(CNN_CONFIGS))
def test_cnn_nngp_matches_monte_carlo(config: str) -> None:
    # 150 nets of 64 channels, O = 32 outputs each: one convolution is exact at any width (4 standard errors),
    # two have an O(1/m) bias: allow 2 max|Sigma| / m.
    x, m = images(4), 64
    depth = CNN_CONFIGS[config]["channels"]
    sigma = analytic_nngp(make_cnn(config, m), x)
    samples = output_covariances([make_cnn(config, m, 32, seed=s) for s in range(150)], x)
    within_standard_errors(samples, sigma, (depth - 1) * 2 * float(sigma.abs().max()) / m)


@pytest.mark.parametrize("config", sorted(CNN_CONFIGS))
def test_cnn_ntk_matches_monte_carlo(config: str) -> None:
    # 24 nets of 128 channels: 4 standard errors (+ 2 max|Theta| / m with two convolutions).
    x, m = images(3), 128
    depth = CNN_CONFIGS[config]["channels"]
    theta = analytic_ntk(make_cnn(config, m), x)
    samples = torch.stack([nk.ntk(make_cnn(config, m, seed=s), x) for s in range(24)])
    within_standard_errors(samples, theta, (depth - 1) * 2 * float(theta.abs().max()) / m)


def test_cnn_one_pixel_is_the_mlp() -> None:
    # 1x1 images through 1x1 convolutions are dense layers: the CNN's kernels are the MLP's exactly.
    x = make_inputs(4)
    cnn = CNN(3, [7, 7], kernel_size=1, activation="erf", weight_std=1.2, bias_std=0.3, dtype=DTYPE)
    mlp = make_mlp([7, 7], "erf")
    for kernel in (analytic_ntk, analytic_nngp):
        assert torch.allclose(kernel(cnn, x[:, :, None, None]), kernel(mlp, x), rtol=1e-13, atol=0)


@pytest.mark.parametrize("convolutional", [False, True])
def test_resnet_matches_monte_carlo(convolutional: bool) -> None:
    # Two residual blocks (branch_scale 1/sqrt(2)): NNGP from 100 nets of width 128 with O = 32 outputs,
    # NTK from 12 nets of width 256 (convolutional: 8 of width 128, 3x3 images); O(1/m) bias: allow 2 max|K| / m.
    kw = dict(in_channels=2) if convolutional else dict(in_features=3)
    x = images(3, size=3) if convolutional else make_inputs(4)

    def make(width: int, out: int = 1, seed: int = 0) -> ResNet:
        return ResNet(
            width,
            2,
            out,
            weight_std=1.2,
            bias_std=0.2,
            dtype=DTYPE,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )

    sigma, theta = analytic_nngp(make(8), x), analytic_ntk(make(8), x)
    within_standard_errors(
        output_covariances([make(128, 32, s) for s in range(100)], x), sigma, 2 * float(sigma.abs().max()) / 128
    )
    nets, m = (8, 128) if convolutional else (12, 256)
    within_standard_errors(
        torch.stack([nk.ntk(make(m, seed=s), x) for s in range(nets)]), theta, 2 * float(theta.abs().max()) / m
    )


def test_family_inputs_are_checked() -> None:
    cnn = make_cnn("valid-stride2-gap-2conv", 4)
    with pytest.raises(ValueError, match="x1 has images of size"):
        analytic_ntk(cnn, images(2, size=2))
    with pytest.raises(ValueError, match="x2 must have shape"):
        analytic_ntk(cnn, images(2), torch.zeros(2, 3, 6, 6, dtype=DTYPE))
    with pytest.raises(TypeError, match="x1"):
        analytic_nngp(cnn, images(2).long())


@pytest.mark.parametrize("same", [True, False])
def test_row_blocks_agree(same: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 2 rows (2 N2 P^2 entries) give the one-block kernels to rounding; x2 = None stays symmetric
    # and pairs each block of rows (at most ceil(N / 8) = 1 here) only with the columns from its first row on.
    model, x1, x2 = make_cnn("stride2-pad1-flatten-2conv", 4), images(5), images(3, seed=1)
    other = None if same else x2
    whole = [kernel(model, x1, other) for kernel in (analytic_ntk, analytic_nngp)]
    monkeypatch.setattr(analytic, "_ROW_ELEMENTS", 2 * (5 if same else 3) * 36**2)
    pairs = []
    propagate = analytic._propagate
    monkeypatch.setattr(
        analytic, "_propagate", lambda *args: pairs.append(tuple(args[1].cross.shape[:2])) or propagate(*args)
    )
    for kernel, expected in zip((analytic_ntk, analytic_nngp), whole):
        pairs.clear()
        got = kernel(model, x1, other)
        assert pairs == ([(1, 5), (1, 4), (1, 3), (1, 2), (1, 1)] if same else [(2, 3), (2, 3), (1, 3)])
        assert torch.allclose(got, expected, rtol=1e-13, atol=0)
        if same:
            assert torch.equal(got, got.T)


def test_an_input_has_correlation_one_with_itself_at_every_layer() -> None:
    # The arc-cosine kernels' angle at a correlation of 1 - 1e-16 is 1.5e-8: unless the variances are read
    # off the cross kernel, the diagonal of a deep relu kernel is ~1e-9 off. The polar quadrature has no
    # arc cosine, so it is the reference (agreement ~1e-14 elsewhere).
    g = torch.Generator().manual_seed(0)
    for model, x in [
        (nk.MLP(5, [8, 8, 8], 1, dtype=DTYPE), torch.randn(20, 5, generator=g, dtype=DTYPE)),
        (make_cnn("stride2-pad1-flatten-2conv", 4), images(5)),
    ]:
        for rows in (None, 2 * 36**2 * 5):  # one block, and blocks of rows paired with their upper triangle
            if rows is not None and model.in_shape == (5,):
                continue
            with pytest.MonkeyPatch.context() as mp:
                if rows is not None:
                    mp.setattr(analytic, "_ROW_ELEMENTS", rows)
                closed = analytic._infinite_width(model, x, None)[1]
            quad = analytic._infinite_width(model, x, None, quadrature=True)[1]
            assert float((closed - quad).abs().max() / quad.abs().max()) < 1e-12


# ---------------------------------------------------------------- sequences (Conv1d) and LayerNorm


def sequences(n: int, channels: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, length, generator=g, dtype=DTYPE)


SEQUENCE_CONFIGS = {
    "same-gap": dict(kernel_size=3, padding="same"),
    "valid-stride2-flatten": dict(kernel_size=2, stride=2, padding="valid", readout="flatten", image_size=7),
    "dilated-pad1-gap": dict(kernel_size=3, padding=1, dilation=2),
}


@pytest.mark.parametrize("config", sorted(SEQUENCE_CONFIGS))
def test_sequence_cnn_is_the_image_cnn_of_height_one(config: str) -> None:
    # A sequence of length L is an image of size 1 x L: with (1, k) kernels, strides, dilations and
    # (0, p) padding the Conv2d network computes the same function, so the limits agree to rounding.
    kw = SEQUENCE_CONFIGS[config]
    as_image = {k: (v if isinstance(v, str) else ((0 if k == "padding" else 1), v)) for k, v in kw.items()}
    x = sequences(4)
    seq = CNN(2, [5, 5], weight_std=1.3, bias_std=0.2, dims=1, dtype=DTYPE, **kw)
    img = CNN(2, [5, 5], weight_std=1.3, bias_std=0.2, dtype=DTYPE, **as_image)
    for kernel in (analytic_ntk, analytic_nngp):
        assert torch.allclose(kernel(seq, x), kernel(img, x[:, :, None, :]), rtol=1e-13, atol=0)


def test_sequence_one_convolution_by_hand() -> None:
    # Identity activation, one "valid" convolution (kernel 2, no bias), a flatten readout, weight_std 1.3 for
    # both layers: Sigma(x, x') = 1.3^2 mean over p of 1.3^2 mean_d K0(p + d, p + d) with
    # K0(p, q) = sum_c x_c(p) x'_c(q) / C.
    x = sequences(3, length=5)
    model = CNN(
        2,
        [4],
        kernel_size=2,
        padding="valid",
        readout="flatten",
        image_size=5,
        dims=1,
        activation="identity",
        bias=False,
        weight_std=1.3,
        dtype=DTYPE,
    )
    k0 = torch.einsum("ncp,mcp->nmp", x, x) / 2  # the diagonal p = q of K0
    expected = 1.3**4 * (k0[..., :-1] + k0[..., 1:]).mean(-1) / 2
    assert torch.allclose(analytic_nngp(model, x), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("config", sorted(SEQUENCE_CONFIGS))
def test_sequence_cnn_matches_monte_carlo(config: str) -> None:
    # NNGP: 150 nets of 64 channels with O = 32 outputs; NTK: 24 nets of 128 channels.  Two convolutions:
    # an O(1/m) finite-width bias, allow 2 max|K| / m on top of 4 standard errors.
    kw = SEQUENCE_CONFIGS[config]
    x = sequences(4)

    def make(width: int, out: int = 1, seed: int = 0) -> CNN:
        return CNN(
            2,
            [width, width],
            out,
            weight_std=1.3,
            bias_std=0.2,
            dims=1,
            dtype=DTYPE,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )

    sigma, theta = analytic_nngp(make(4), x), analytic_ntk(make(4), x)
    within_standard_errors(
        output_covariances([make(64, 32, s) for s in range(150)], x), sigma, 2 * float(sigma.abs().max()) / 64
    )
    within_standard_errors(
        torch.stack([nk.ntk(make(128, seed=s), x[:3]) for s in range(24)]),
        theta[:3, :3],
        2 * float(theta.abs().max()) / 128,
    )


def _resnet(norm: str | None, width: int = 8, out: int = 1, seed: int = 0, **kw: object) -> ResNet:
    kw = kw if "in_channels" in kw else {"in_features": 3, **kw}
    return ResNet(
        width,
        2,
        out,
        norm=norm,
        activation="erf",
        weight_std=1.4,
        bias_std=0.3,
        dtype=DTYPE,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_post_norm_by_hand(frozen: bool) -> None:
    # One block with the LayerNorm after the sum: the head (Linear, weight_std 1.4, bias_std 0.3) reads
    # u = LN(h) with h the sum.  From the network without the norm, whose head reads h itself:
    # K_h = (Sigma - 0.3^2) / 1.4^2 and Theta_h = (Theta - Sigma) / 1.4^2.  With the norm
    # rho = K_h / sqrt((K_h(x, x) + eps)(K_h(x', x') + eps)), Sigma' = 1.4^2 rho + 0.3^2 and
    # Theta' = 1.4^2 (Theta_h / sqrt(..) + rho + 1) + Sigma' (the gain's and the bias's terms unless frozen).
    x = make_inputs(5)
    plain = ResNet(8, 1, in_features=3, activation="erf", weight_std=1.4, bias_std=0.3, dtype=DTYPE)
    normed = ResNet(8, 1, in_features=3, norm="post", activation="erf", weight_std=1.4, bias_std=0.3, dtype=DTYPE)
    eps = normed.residual[0].norm.eps
    if frozen:
        normed.residual[0].norm.requires_grad_(False)
    sigma, theta = analytic_nngp(plain, x), analytic_ntk(plain, x)
    k_h, theta_h = (sigma - 0.3**2) / 1.4**2, (theta - sigma) / 1.4**2
    v = k_h.diagonal() + eps
    scale = torch.sqrt(v[:, None] * v[None, :])
    rho = k_h / scale
    expected_sigma = 1.4**2 * rho + 0.3**2
    expected_theta = 1.4**2 * (theta_h / scale + (0 if frozen else rho + 1)) + expected_sigma
    assert torch.allclose(analytic_nngp(normed, x), expected_sigma, rtol=1e-13, atol=0)
    assert torch.allclose(analytic_ntk(normed, x), expected_theta, rtol=1e-13, atol=0)


def test_layer_norm_output_has_unit_variance() -> None:
    # Pre-norm ends with a LayerNorm before the head: the head reads features of variance K / (K + eps),
    # so Sigma(x, x) = 1.4^2 K / (K + eps) + 0.3^2 for any input scale (here 1e-3 to 1e3 times the inputs).
    x = make_inputs(4) * torch.logspace(-3, 3, 4, dtype=DTYPE)[:, None]
    model = _resnet("pre")
    diag = analytic_nngp(model, x).diagonal()
    assert ((diag - (1.4**2 + 0.3**2)).abs() <= 1.4**2 * 1e-4).all(), diag
    assert diag[-1] - (1.4**2 + 0.3**2) > -1e-14 - 1.4**2 * model.final_norm.eps  # K / (K + eps) < 1


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("shape", ["dense", "sequences"])
def test_layer_norm_resnet_matches_monte_carlo(norm: str, shape: str) -> None:
    # NNGP: 100 nets of width 128 with O = 32 outputs; NTK (LayerNorm gains and biases trained too): 10 nets
    # of width 256 (sequences: 8 of width 128).  LayerNorm and depth add an O(1/m) bias: allow 3 max|K| / m.
    kw = dict(in_channels=2, dims=1, kernel_size=3) if shape == "sequences" else {}
    x = sequences(3, length=4) if shape == "sequences" else make_inputs(4)
    sigma, theta = analytic_nngp(_resnet(norm, **kw), x), analytic_ntk(_resnet(norm, **kw), x)
    within_standard_errors(
        output_covariances([_resnet(norm, 128, 32, s, **kw) for s in range(100)], x),
        sigma,
        3 * float(sigma.abs().max()) / 128,
    )
    nets, m = (8, 128) if shape == "sequences" else (10, 256)
    samples = torch.stack([nk.ntk(_resnet(norm, m, seed=s, **kw), x) for s in range(nets)])
    within_standard_errors(samples, theta, 3 * float(theta.abs().max()) / m)


def test_layer_norm_of_activations_is_refused_by_name() -> None:
    # With post_activation a LayerNorm normalises phi(u), whose channel mean does not vanish: refused.
    x = make_inputs(2)
    for norm in ("pre", "post"):
        model = ResNet(4, 2, in_features=3, norm=norm, post_activation=True, dtype=DTYPE)
        for kernel in (analytic_ntk, analytic_nngp):
            with pytest.raises(ValueError, match="post_activation=True: a LayerNorm then normalises an activation"):
                kernel(model, x)
    # one block with the norm after the sum sees only Gaussian streams: its limit exists
    single = ResNet(4, 1, in_features=3, norm="post", post_activation=True, dtype=DTYPE)
    assert torch.isfinite(analytic_ntk(single, x)).all()


def test_sequence_inputs_are_checked() -> None:
    model = CNN(2, [4], kernel_size=3, padding="valid", dims=1, dtype=DTYPE)
    with pytest.raises(ValueError, match="x1 has sequences of size"):
        analytic_ntk(model, sequences(2, length=2))
    with pytest.raises(ValueError, match=r"x1 must have shape \(N, 2, size\)"):
        analytic_ntk(model, images(2))
