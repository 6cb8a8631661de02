"""The mock survey's physics: what an astronomer would check first."""

import numpy as np
import pandas as pd
import pytest

from astroclip_pipeline.sources.desi import wavelength_grid
from astroclip_pipeline.sources.mock.images import render_cutouts, sky_sigma
from astroclip_pipeline.sources.mock.population import PopulationSpec, draw_population, quiescent_fraction
from astroclip_pipeline.sources.mock.spectra import model_spectra
from astroclip_pipeline.sources.mock.templates import load_templates, photometry_table

H_ALPHA = 6562.8  # Å; the kcorrect templates carry nebular emission lines


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return draw_population(PopulationSpec(n_galaxies=1500), np.random.default_rng(11))


def test_colours_redden_with_redshift():
    """k-correction: an old stellar population's g-r grows as the 4000 Å break moves into r."""
    table = photometry_table()
    old = np.zeros((6, load_templates().n_templates))
    old[:, 3] = 1e10  # the template that formed nothing in the last Gyr
    z = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    mags = -2.5 * np.log10(table.maggies(old, z, np.zeros_like(z)))
    g_minus_r = mags[:, 0] - mags[:, 1]
    assert np.all(np.diff(g_minus_r) > 0), g_minus_r
    assert g_minus_r[-1] - g_minus_r[0] > 0.5


def test_population_colour_redshift_trend(population):
    g_minus_r = -2.5 * np.log10(population.FLUX_G / population.FLUX_R)
    low, high = population.Z < 0.15, population.Z > 0.35
    assert np.median(g_minus_r[high]) > np.median(g_minus_r[low]) + 0.3


def test_flux_limit_and_mass_redshift_correlation(population):
    r_mag = 22.5 - 2.5 * np.log10(population.FLUX_R)
    assert r_mag.max() < 19.5
    assert population.Z.between(0.01, 0.6).all()
    # Flux-limited: at high z only massive galaxies make the cut.
    assert np.corrcoef(population.Z, population.LOGMSTAR)[0, 1] > 0.3
    assert population.LOGMSTAR[population.Z > 0.4].min() > population.LOGMSTAR[population.Z < 0.1].median()


def test_quiescent_galaxies_are_massive_old_and_passive(population):
    assert quiescent_fraction(11.0) > 0.8 > 0.2 > quiescent_fraction(10.0)
    q, sf = population[population.QUIESCENT], population[~population.QUIESCENT]
    assert q.LOGMSTAR.median() > sf.LOGMSTAR.median()
    assert q.SSFR.median() < sf.SSFR.median() - 1.0
    # Compare ages at fixed redshift: the flux limit puts quiescent galaxies further away, where
    # the universe (and so the oldest stars) is younger.
    same_z = population.Z.between(0.15, 0.3)
    ages = population.AGE[same_z]
    assert ages[population.QUIESCENT].median() > ages[~population.QUIESCENT].median()


@pytest.mark.parametrize("z", [0.05, 0.2, 0.35])
def test_emission_line_lands_at_redshifted_wavelength(population, z):
    galaxy = population[~population.QUIESCENT].iloc[[0]].copy()
    galaxy["Z"] = z
    wavelength = wavelength_grid(1)
    spectrum = model_spectra(galaxy, wavelength)[0]
    expected = (1 + z) * H_ALPHA
    window = np.abs(wavelength - expected) < 60
    peak = wavelength[window][np.argmax(spectrum[window])]
    continuum = np.median(spectrum[window])
    assert abs(peak - expected) < 4.0 * (1 + z)  # the templates sample Hα every ~3 Å
    assert spectrum[window].max() > 1.5 * continuum


def test_cutout_flux_matches_catalogue_magnitudes(population):
    """Summed over the stamp, each band's flux is the catalogue flux within the sky noise."""
    galaxies = population[(population.RE_DISK < 1.5) & (population.RE_BULGE < 1.0)].iloc[:40].copy()
    galaxies["ARTEFACT"] = 0
    galaxies["MERGER"] = 0  # a merger's companion is a second galaxy, not in this one's catalogue flux
    size = 96
    noisy = render_cutouts(galaxies, size, np.random.default_rng(0), neighbour_rate=0.0, noise=True)
    clean = render_cutouts(galaxies, size, np.random.default_rng(0), neighbour_rate=0.0, noise=False)
    noise_of_sum = sky_sigma(1.3) * size  # sqrt(size²) pixels of independent noise
    for b, band in enumerate("GRZ"):
        catalogue = galaxies[f"FLUX_{band}"].to_numpy()
        # Within 5 sigma of the sky noise plus 3% for light beyond the stamp edge.
        noisy_sum = noisy[:, b].sum(axis=(1, 2))
        assert np.all(np.abs(noisy_sum - catalogue) < 5 * noise_of_sum[b] + 0.03 * catalogue), band
        # Without noise, only the light beyond the stamp is lost.
        ratio = clean[:, b].sum(axis=(1, 2)) / catalogue
        assert np.all((ratio > 0.95) & (ratio < 1.001)), (band, ratio.min(), ratio.max())


def test_artefacts_change_only_flagged_cutouts(population):
    galaxies = population.iloc[:4].copy()
    galaxies["ARTEFACT"] = [0, 1, 2, 3]
    clean = galaxies.assign(ARTEFACT=0)
    with_artefacts = render_cutouts(galaxies, 48, np.random.default_rng(5), neighbour_rate=0, noise=False)
    without = render_cutouts(clean, 48, np.random.default_rng(5), neighbour_rate=0, noise=False)
    np.testing.assert_allclose(with_artefacts[0], without[0], rtol=1e-6)
    assert with_artefacts[1].max() > 10 * without[1].max()  # saturated star
    assert (with_artefacts[2] - without[2]).sum() > 1.0  # streak adds light
    assert (with_artefacts[3] == 0).sum() > 0.1 * 48 * 48  # missing region is zero
