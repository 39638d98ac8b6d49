"""The init-rates (seed 003) and frequency (seeds 000 §5, 002) reproductions at tiny sizes, and their tools."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import ntkcheck as nk
from ntkcheck.experiments import experiment, mode_of, write_report
from ntkcheck.experiments import frequency as freq
from ntkcheck.experiments import init_rates as rates
from ntkcheck.experiments._fourier import centroid, energy_spectrum, gap_cutoff, gaussian_split, nudft
from ntkcheck.experiments._sphere import multiplicities, sphere_spectrum, uniform_sphere

TINY_RATES = dict(
    dims=(3,),
    info_dims=(),
    ns=(16, 32, 64),
    seeds=3,
    n_test=60,
    h_ini="gp",
    times=(-2.0, 5.0, 8),
    bootstrap=20,
    degrees=30,
)
TINY_FREQ = dict(seeds=2, width=64, n_train=8, grid=64, sphere_dim=3, sphere_train=24, sphere_test=60)


# ------------------------------------------------------------------------------------------------
# spectral tools


def test_nudft_of_sinusoids_recovers_their_coefficients():
    x = torch.arange(128, dtype=torch.float64) / 128
    values = torch.cos(2 * math.pi * 5 * x) + 0.5 * torch.sin(2 * math.pi * 3 * x)
    c = nudft(values, x, torch.arange(-8, 9, dtype=torch.float64))
    coef = dict(zip(range(-8, 9), c.tolist()))
    assert abs(coef[5] - 0.5) < 1e-12 and abs(coef[-5] - 0.5) < 1e-12
    assert abs(coef[3] - (-0.25j)) < 1e-12 and abs(coef[-3] - 0.25j) < 1e-12
    others = [abs(v) for k, v in coef.items() if abs(k) not in (3, 5)]
    assert max(others) < 1e-12


def test_nudft_with_vector_frequencies_matches_projection():
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(50, 3, generator=gen, dtype=torch.float64)
    vals = torch.randn(50, generator=gen, dtype=torch.float64)
    p = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    ks = torch.arange(4, dtype=torch.float64)
    assert torch.allclose(nudft(vals, pts, ks[:, None] * p), nudft(vals, pts @ p, ks), atol=1e-13)


def test_energy_spectrum_of_a_pure_cosine_peaks_at_its_frequency():
    grid = torch.arange(256, dtype=torch.float64) * (2 * math.pi / 256)
    e = energy_spectrum(torch.cos(7 * grid), grid, 128)
    assert int(np.argmax(e)) == 7
    assert e[7] == pytest.approx(0.5, abs=1e-12)  # the mean square of cos
    assert e.sum() == pytest.approx(0.5, abs=1e-12)
    assert centroid(e) == pytest.approx(7.0, abs=1e-9)


def test_gaussian_split_keeps_constants_low_and_sums_back():
    gen = torch.Generator().manual_seed(1)
    pts = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    const = torch.full((40,), 2.5, dtype=torch.float64)
    low, high = gaussian_split(const, pts, 0.7)
    assert high.abs().max() < 1e-12
    v = torch.randn(40, generator=gen, dtype=torch.float64)
    low, high = gaussian_split(v, pts, 0.7)
    assert torch.allclose(low + high, v)
    assert float(high.norm()) > 0


# ------------------------------------------------------------------------------------------------
# sphere spectra and the spectral prediction


def test_uniform_sphere_radius_and_shape():
    x = uniform_sphere(100, 4, torch.Generator().manual_seed(0))
    assert x.shape == (100, 5)
    assert torch.allclose(x.norm(dim=1), torch.full((100,), math.sqrt(5.0), dtype=torch.float64))


def test_multiplicities_are_those_of_spherical_harmonics():
    assert multiplicities(2, 5).tolist() == [1, 3, 5, 7, 9, 11]  # S^2: 2k + 1
    assert multiplicities(3, 4).tolist() == [1, 4, 9, 16, 25]  # S^3: (k + 1)^2


def test_funk_hecke_spectrum_sums_to_the_kernel_diagonal():
    d = 3
    model = rates.network(d, rates.Config(**TINY_RATES))
    mu_gp, mult = sphere_spectrum("nngp", model, d, 60)
    mu_ntk, _ = sphere_spectrum("ntk", model, d, 60)
    x0 = uniform_sphere(1, d, torch.Generator().manual_seed(0))
    assert (mult * mu_gp).sum() == pytest.approx(float(nk.analytic_nngp(model, x0)[0, 0]), rel=1e-3)
    assert (mult * mu_ntk).sum() == pytest.approx(float(nk.analytic_ntk(model, x0)[0, 0]), rel=1e-2)
    assert (mu_gp > 0).all() and (mu_ntk > 0).all()  # with biases no harmonic degree is lost
    assert mu_gp[30] / mu_ntk[30] < mu_gp[5] / mu_ntk[5]  # the NNGP decays faster than the NTK


def test_target_energy_lives_on_degrees_up_to_two():
    d = 5
    e = rates.target_energy(d, 10)
    mean_square = 1 + (3 * (d + 1) / (d + 3) - 1) / 4  # E[(z + (z^2 - 1)/2)^2], E z^4 = 3(d+1)/(d+3)
    assert e[:3].sum() == pytest.approx(mean_square, rel=1e-10)
    assert e[3:].sum() < 1e-20
    assert e[0] < 1e-20  # mean zero


def test_predicted_errors_decrease_with_n_and_mirrored_is_below_standard():
    d = 3
    model = rates.network(d, rates.Config(**TINY_RATES))
    mu, mult = sphere_spectrum("ntk", model, d, 40)
    gp, _ = sphere_spectrum("nngp", model, d, 40)
    energy = rates.target_energy(d, 40)
    ns = np.array([10.0, 100.0, 1000.0, 10000.0])
    mir = rates.predicted_errors(ns, mu, mult, None, energy, 1.0)
    std = rates.predicted_errors(ns, mu, mult, gp, energy, 1.0)
    assert (np.diff(mir) < 0).all() and (np.diff(std) < 0).all()
    assert (mir < std).all()


# ------------------------------------------------------------------------------------------------
# the reproductions at tiny sizes


@pytest.fixture(scope="module")
def tiny_rates():
    return rates.run(rates.Config(**TINY_RATES), device="cpu")


@pytest.fixture(scope="module")
def tiny_freq():
    return freq.run(freq.Config(**TINY_FREQ), device="cpu")


def test_init_rates_mirrored_error_is_below_standard_at_every_n(tiny_rates):
    errors = tiny_rates.tables["Error at the best stopping time (seed-averaged)"]
    assert [r["n"] for r in errors] == list(TINY_RATES["ns"])
    for row in errors:  # the initial output only adds error (seed 000 Thm 3)
        assert 0 < row["error mirrored"] <= row["error standard"]


def test_init_rates_slopes_are_finite_and_negative(tiny_rates):
    for row in tiny_rates.tables["Log-log slopes (least squares; SE by bootstrap over seeds)"]:
        assert math.isfinite(row["measured slope"]) and row["measured slope"] < 0
        assert math.isfinite(row["SE"]) and row["SE"] >= 0
        assert row["finite-n predicted slope"] < 0
    assert len(tiny_rates.verdicts) == 4
    assert all(math.isfinite(v.measured) and math.isfinite(v.threshold) for v in tiny_rates.verdicts)
    assert all(len(v.values) == TINY_RATES["seeds"] for v in tiny_rates.verdicts)
    # the population formula is reported, not scored; seed 003's claims are scored for d in config.dims
    assert [v.status == "information" for v in tiny_rates.verdicts] == [False, False, False, True]


def test_init_rates_verdicts_are_on_per_seed_slopes_at_the_common_best_time(tiny_rates):
    band = [v for v in tiny_rates.verdicts if "within the band" in v.claim][0]
    steeper = [v for v in tiny_rates.verdicts if "mirrored slope steeper" in v.claim][0]
    assert band.measured == pytest.approx(np.mean(band.values)) and all(v >= 0 for v in band.values)
    assert len(steeper.values) == 3 and all(math.isfinite(v) for v in steeper.values)
    scale = tiny_rates.tables["Initial output scale (NTK parametrization: width-independent)"][0]
    assert scale["d"] == 3 and scale["infinite width: sqrt(NNGP(x, x))"] > 0


def test_init_rates_reports_dimensions_it_does_not_score():
    result = rates.run(rates.Config(**{**TINY_RATES, "dims": (2,), "info_dims": (3,)}), device="cpu")
    assert [v.status == "information" for v in result.verdicts] == [False, False, False, True] + [True] * 4
    assert all(v.claim.startswith("d=3") for v in result.verdicts[4:])


def test_init_rates_flow_at_infinity_is_decompose_total(tiny_rates):
    spectra = tiny_rates.tables["Kernel spectra on S^d"][0]
    assert spectra["decompose total vs flow at t=inf (rel.)"] < 1e-8
    assert spectra["sum N_k mu_k^NNGP"] == pytest.approx(spectra["NNGP(x, x)"], rel=1e-3)


def test_init_rates_report_is_written(tiny_rates, tmp_path):
    assert experiment("init-rates") is rates and tiny_rates.mode == "custom"
    assert set(tiny_rates.figures) == {"rates", "local-slopes"}
    path = write_report(tiny_rates, out=tmp_path)
    text = path.read_text()
    assert path.name == "reproduce-init-rates.md" and "## Verdicts" in text and "-3/(d+3)" in text
    assert (tmp_path / "reproduce-init-rates-rates.png").stat().st_size > 1000


def test_init_rates_with_real_networks_is_reproducible_from_its_seed():
    config = rates.Config(
        **{**TINY_RATES, "ns": (8, 16, 32), "n_test": 20, "seeds": 3, "h_ini": "network", "width": 16, "bootstrap": 10}
    )
    a, b = rates.run(config, device="cpu"), rates.run(config, device="cpu")
    key = "Error at the best stopping time (seed-averaged)"
    errors = [r["error standard"] for r in a.tables[key]]
    assert all(math.isfinite(e) and e > 0 for e in errors)
    assert errors == [r["error standard"] for r in b.tables[key]]


def test_frequency_tiny_run_measures_real_properties(tiny_freq, tmp_path):
    result = tiny_freq
    q = {r["quantity"]: r["value"] for r in result.tables["Measured quantities"]}
    # the init-induced term vanishes at the training points (seed 000 eq (6): h_k interpolates h_ini(X))
    assert q["circle: max abs(init-induced term) at the training points / max abs(h_ini)"] < 1e-8
    assert q["circle, equispaced control: max abs(init-induced term) at the training points / max abs(h_ini)"] < 1e-8
    centroid_term = q["circle: spectral centroid of the init-induced term (k >= 1), seed-averaged spectrum"]
    assert centroid_term > q["circle: spectral centroid of h_ini (k >= 1), seed-averaged spectrum"]
    assert len(result.verdicts) == 5 and all(len(v.values) == TINY_FREQ["seeds"] for v in result.verdicts)
    literal = [v for v in result.verdicts if "constrained band" in v.claim][0]
    assert literal.threshold == 0.5 and all(0 <= v <= 1 for v in literal.values)
    high = [v for v in result.verdicts if "two-sided" in v.claim][0]
    assert high.status == "information" and "rougher" in high.information
    sphere = [v for v in result.verdicts if v.claim.startswith("S^3")][0]
    assert all(v > 0 for v in sphere.values)
    bands = result.tables["Seed-averaged energy by frequency band (circle)"]
    assert bands[0]["share left"] < bands[-1]["share left"]  # low frequencies fitted away, high ones kept
    path = write_report(result, out=tmp_path)
    assert "## Verdicts" in path.read_text() and (tmp_path / "reproduce-frequency-circle.png").exists()


def test_gap_cutoff_is_pi_over_the_largest_gap_around_the_circle():
    n = 16
    equi = 2 * math.pi * (np.arange(n) + 0.3) / n
    assert gap_cutoff(equi) == pytest.approx(n / 2)  # equispaced: the Nyquist frequency
    # three points; the largest gap wraps around from 5 to 2 pi + 0.5
    assert gap_cutoff(np.array([5.0, 0.5, 2.0])) == pytest.approx(math.pi / 3.0)


def test_frequency_without_the_sphere_view():
    result = freq.run(freq.Config(**{**TINY_FREQ, "sphere_dim": 0, "seeds": 1}), device="cpu")
    assert len(result.verdicts) == 4
    assert not any(r["quantity"].startswith("S^") for r in result.tables["Measured quantities"])


def test_quick_and_full_configs_are_named_by_mode():
    assert mode_of(rates.Config.quick(3)) == "quick" and mode_of(rates.Config.full()) == "full"
    assert mode_of(freq.Config.quick()) == "quick" and mode_of(freq.Config.full(1)) == "full"
    assert mode_of(dataclasses.replace(freq.Config.quick(), width=7)) == "custom"
    assert rates.Config.quick(5).seed == 5 and freq.Config.quick(5).seed == 5


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(ns=(32, 16, 64)), "ns"),
        (dict(ns=(16, 32)), "ns"),
        (dict(seeds=1), "seeds"),
        (dict(noise=0.0), "noise"),
        (dict(h_ini="zeros"), "h_ini"),
        (dict(dims=(1,)), "dims"),
    ],
)
def test_init_rates_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        rates.Config(**{**TINY_RATES, **bad})


@pytest.mark.parametrize(
    "bad, match", [(dict(n_train=2), "n_train"), (dict(grid=16), "grid"), (dict(sphere_dim=-1), "sphere_dim")]
)
def test_frequency_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        freq.Config(**{**TINY_FREQ, **bad})
