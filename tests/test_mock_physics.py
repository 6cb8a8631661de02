"""The mock survey's physics: what an astronomer would check first."""

import numpy as np
import pandas as pd
import pytest

from astroclip_pipeline.sources.desi import wavelength_grid
from astroclip_pipeline.sources.mock.images import render_cutouts, sky_sigma
from astroclip_pipeline.sources.mock.metallicity import GALLAZZI_2005, Z_SOLAR, draw_stellar_metallicity
from astroclip_pipeline.sources.mock.population import (
    PopulationSpec,
    component_coefficients,
    draw_population,
    quiescent_fraction,
)
from astroclip_pipeline.sources.mock.spectra import model_spectra
from astroclip_pipeline.sources.mock.templates import (
    FILTER_NAMES,
    decam_filters,
    dust_transmission,
    load_templates,
    observed_template_flux,
    photometry_table,
)

H_ALPHA = 6562.8  # Å; the kcorrect templates carry nebular emission lines
#: Lick indices (Trager et al. 1998, air wavelengths, Å): index band, blue and red pseudo-continua.
LICK = {
    "G4300": ((4281.375, 4316.375), (4266.375, 4282.625), (4318.875, 4335.125)),
    "Mg b": ((5160.125, 5192.625), (5142.625, 5161.375), (5191.375, 5206.375)),
    "Fe5270": ((5245.650, 5285.650), (5233.150, 5248.150), (5285.650, 5318.150)),
    "Fe5335": ((5312.125, 5352.125), (5304.625, 5315.875), (5353.375, 5363.375)),
    "Na D": ((5876.875, 5909.375), (5860.625, 5875.625), (5922.125, 5948.125)),
}


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return draw_population(PopulationSpec(n_galaxies=1500), np.random.default_rng(11))


def test_colours_redden_with_redshift():
    """k-correction: an old stellar population's g-r grows as the 4000 Å break moves into r."""
    table = photometry_table()
    old = np.zeros((6, load_templates().n_templates))
    old[:, 3] = 1e10  # the template that formed nothing in the last Gyr
    z = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    mags = -2.5 * np.log10(table.maggies(old, z, np.zeros_like(z), np.full_like(z, Z_SOLAR)))
    g_minus_r = mags[:, 0] - mags[:, 1]
    assert np.all(np.diff(g_minus_r) > 0), g_minus_r
    assert g_minus_r[-1] - g_minus_r[0] > 0.5


def test_population_colour_redshift_trend(population):
    g_minus_r = -2.5 * np.log10(population.FLUX_G / population.FLUX_R)
    low, high = population.Z < 0.15, population.Z > 0.35
    # Quiescent galaxies show the k-correction cleanly; the whole population's trend also depends
    # on how the flux limit mixes star-forming and quiescent galaxies at each redshift.
    quiescent = population.QUIESCENT
    assert np.median(g_minus_r[high & quiescent]) > np.median(g_minus_r[low & quiescent]) + 0.5
    assert np.median(g_minus_r[high]) > np.median(g_minus_r[low]) + 0.2


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


def test_metallicity_follows_gallazzi_2005():
    """At each mass of Gallazzi et al.'s (2005) Table 2 the drawn log(Z/Z_sun) has its percentiles."""
    rng = np.random.default_rng(3)
    log_mass = np.repeat(GALLAZZI_2005[:, 0], 20_000)
    log_z = np.log10(draw_stellar_metallicity(rng, log_mass) / Z_SOLAR).reshape(len(GALLAZZI_2005), -1)
    np.testing.assert_allclose(np.percentile(log_z, [16, 50, 84], axis=1).T, GALLAZZI_2005[:, 1:], atol=0.02)
    # The relation's slope between 10^9.5 and 10^11: 0.7 dex in Z over 1.5 dex in mass.
    median = np.median(log_z, axis=1)
    middle = (GALLAZZI_2005[:, 0] > 9.5) & (GALLAZZI_2005[:, 0] < 11.0)
    slope = np.polyfit(GALLAZZI_2005[middle, 0], median[middle], 1)[0]
    assert 0.45 < slope < 0.55, slope


def test_population_metallicity_spreads_with_mass(population):
    """The survey's Z_MW follows mass with a broad scatter (the kcorrect mixes alone gave 0.04 dex)."""
    log_z = np.log10(population.Z_MW)
    assert log_z.std() > 0.3
    assert np.corrcoef(log_z, population.LOGMSTAR)[0, 1] > 0.4
    massive, dwarf = population.LOGMSTAR > 10.8, population.LOGMSTAR < 9.8
    assert np.median(log_z[massive]) > np.median(log_z[dwarf]) + 0.4


def test_photometry_is_that_of_the_catalogue_metallicity(population):
    """FLUX_* are the template mixes at Z_MW; the same quiescent mixes made metal-rich are redder.

    Star-forming galaxies are left out of the colour check: in BC03 the optical colours of young
    populations barely move with metallicity (see ``metallicity.py``).
    """
    coefficients = component_coefficients(population, "BULGE") + component_coefficients(population, "DISK")
    table = photometry_table()
    rendered = table.maggies(coefficients, population.Z, population.AV, population.Z_MW) * 1e9
    np.testing.assert_allclose(rendered, population[["FLUX_G", "FLUX_R", "FLUX_Z"]].to_numpy(), rtol=1e-9)
    richer = np.minimum(2.0 * population.Z_MW, 2.5 * Z_SOLAR)
    rich = table.maggies(coefficients, population.Z, population.AV, richer) * 1e9
    reddening = -np.diff(-2.5 * np.log10(rich), axis=1) + np.diff(-2.5 * np.log10(rendered), axis=1)
    moved = (population.QUIESCENT & (richer > 1.5 * population.Z_MW)).to_numpy()
    assert moved.sum() > 100
    g_r, r_z = reddening[moved].T  # change of g-r and of r-z
    assert (g_r > 0).mean() > 0.95 and (r_z > 0).mean() > 0.95
    assert np.median(g_r) > 0.04 and np.median(r_z) > 0.04


def _lick_index(wavelength: np.ndarray, flux: np.ndarray, bands) -> float:
    """Equivalent width (Å) of a Lick index in a rest-frame spectrum (Worthey et al. 1994's definition)."""
    (lo, hi), blue, red = bands
    means = [flux[(wavelength >= a) & (wavelength <= b)].mean() for a, b in (blue, red)]
    centres = [0.5 * sum(blue), 0.5 * sum(red)]
    inside = (wavelength >= lo) & (wavelength <= hi)
    continuum = np.interp(wavelength[inside], centres, means)
    return float(np.sum(1.0 - flux[inside] / continuum) * np.median(np.diff(wavelength)))


def test_metal_rich_spectrum_has_deeper_metal_lines_and_redder_continuum(population):
    """All else equal, a galaxy at twice solar metallicity against a fifth of it: deeper Mg b, Fe,
    Na D and G band, a stronger 4000 Å break (Ca H&K) and a redder continuum."""
    z = 0.05
    galaxy = population[population.QUIESCENT].iloc[[0, 0]].copy()
    galaxy["Z"] = z
    galaxy["Z_MW"] = [0.2 * Z_SOLAR, 2.0 * Z_SOLAR]
    wavelength = wavelength_grid(1)
    poor, rich = model_spectra(galaxy, wavelength)
    rest = wavelength / (1.0 + z)
    for name, bands in LICK.items():
        assert _lick_index(rest, rich, bands) > _lick_index(rest, poor, bands) + 0.3, name

    def d4000(flux):  # Balogh et al. (1999) narrow 4000 Å break
        return flux[(rest > 4000) & (rest < 4100)].mean() / flux[(rest > 3850) & (rest < 3950)].mean()

    assert d4000(rich) > d4000(poor) + 0.1

    def red_over_blue(flux):
        return flux[(rest > 6000) & (rest < 6500)].mean() / flux[(rest > 4200) & (rest < 4700)].mean()

    assert red_over_blue(rich) > 1.1 * red_over_blue(poor)


@pytest.mark.parametrize("metallicity", [0.1 * Z_SOLAR, 2.0 * Z_SOLAR])
def test_photometry_table_agrees_with_the_spectra(metallicity):
    """The tabulated g, r, z maggies of templates at a metallicity, with dust, are the synthetic
    photometry of the same spectra that the fibre spectra are built from (within 0.5%), also
    where dust and metallicity both reshape the rest-frame UV that g sees at high redshift."""
    templates, table = load_templates(), photometry_table()
    z, av = np.array([0.123, 0.59]), np.array([0.8, 2.0])
    wavelength = np.arange(3300.0, 11000.0, 2.0)
    spectra = observed_template_flux(templates, z, wavelength, metallicity)
    spectra *= dust_transmission(wavelength[None, :] / (1.0 + z[:, None]), av)[:, None, :]
    maggies = decam_filters().get_ab_maggies(spectra.reshape(-1, wavelength.size), wavelength)
    direct = np.stack([np.asarray(maggies[name]) for name in FILTER_NAMES], axis=-1).reshape(2, -1, 3)
    coefficients = np.eye(templates.n_templates)
    for i in range(2):
        tabulated = table.maggies(coefficients, np.full(5, z[i]), np.full(5, av[i]), np.full(5, metallicity))
        np.testing.assert_allclose(tabulated, direct[i], rtol=0.005)


def test_metallicity_outside_the_models_is_refused():
    templates, table = load_templates(), photometry_table()
    one = np.ones((1, templates.n_templates))
    with pytest.raises(ValueError, match=r"outside the BC03 grid .*0\.0001-0\.05"):
        table.maggies(one, np.array([0.1]), np.array([0.0]), np.array([0.2]))
    with pytest.raises(ValueError, match="outside the BC03 grid"):
        templates.flux_at(1e-6)
