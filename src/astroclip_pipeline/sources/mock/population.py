"""Galaxies of a flux-limited, BGS-like survey, drawn from physical distributions.

Candidates are placed uniformly in comoving volume (0.01 < z < 0.6) with stellar masses from
the double-Schechter mass function of Baldry et al. (2012); each is star-forming or quiescent
with a mass-dependent quiescent fraction, is a bulge plus a disk with their own kcorrect template
mixes, has a stellar metallicity from the mass-metallicity relation of Gallazzi et al. (2005)
(``metallicity.py``: it changes the templates' spectra, so the flux limit sees it too), and is
dimmed by Calzetti dust. Only the candidates brighter than the survey's r-band limit
are kept (rejection), so redshift and stellar mass correlate as in the real BGS.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.cosmology import Planck18

from .metallicity import draw_stellar_metallicity
from .morphology import draw_morphology
from .templates import BANDS, Templates, load_templates, maggies_to_nanomaggies, photometry_table

#: Baldry et al. 2012 (GAMA, z < 0.06) double Schechter: log M*, phi1, alpha1, phi2, alpha2.
_MASS_FUNCTION = (10.66, 3.96e-3, -0.35, 0.79e-3, -1.47)
_LOG_MASS_RANGE = (7.5, 12.3)
#: The kcorrect templates split into old ones (nothing formed in the last 300 Myr) and young ones;
#: a component is a Dirichlet mix of each, in proportions set by its specific star-formation rate.
_OLD_TEMPLATES = np.array([0, 2, 3])
#: Templates 0 and 2 formed half their mass 0.3-1 Gyr ago, template 3 nothing in the last Gyr:
#: quiescent components are mostly template 3, star-forming disks have more intermediate-age stars.
_OLD_MIX_QUIESCENT = np.array([0.2, 0.5, 8.0])
_OLD_MIX_STAR_FORMING = np.array([1.0, 3.0, 4.0])
_YOUNG_TEMPLATES = np.array([1, 4])
_YOUNG_MIX = np.array([0.3, 3.0])
#: log sSFR/yr: a star-forming main sequence that falls with mass (scatter 0.3 dex) and a
#: quiescent sequence two dex below it.
_MAIN_SEQUENCE = (-9.9, -0.3, 0.3)
_QUIESCENT_SEQUENCE = (-11.8, 0.4)
#: van der Wel et al. 2014 size-mass relations at z ~ 0.25: log R_e/kpc = A + alpha log(M/5e10).
_SIZE_LATE = (0.86, 0.25, 0.16)
_SIZE_EARLY = (0.60, 0.75, 0.10)
_TARGETID_RANGE = (39627000000000000, 39640000000000000)  # the span of real DESI main-survey ids


@dataclass(frozen=True)
class PopulationSpec:
    """What the survey sees: how many galaxies, over which redshifts, down to which magnitude."""

    n_galaxies: int
    z_min: float = 0.01
    z_max: float = 0.6
    mag_limit_r: float = 19.5
    ra_range: tuple[float, float] = (150.0, 250.0)
    dec_range: tuple[float, float] = (-5.0, 60.0)


def _draw_redshift(rng: np.random.Generator, n: int, z_min: float, z_max: float) -> np.ndarray:
    """Uniform in comoving volume: inverse-CDF sampling of dV/dz on a fine grid."""
    grid = np.linspace(z_min, z_max, 2048)
    pdf = Planck18.differential_comoving_volume(grid).value
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)


def _draw_log_mass(rng: np.random.Generator, n: int) -> np.ndarray:
    """Inverse-CDF sampling of the double-Schechter mass function (per dex)."""
    log_m_star, phi1, a1, phi2, a2 = _MASS_FUNCTION
    grid = np.linspace(*_LOG_MASS_RANGE, 4096)
    x = 10.0 ** (grid - log_m_star)
    pdf = np.log(10) * np.exp(-x) * (phi1 * x ** (a1 + 1) + phi2 * x ** (a2 + 1))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)


def quiescent_fraction(log_mass: np.ndarray) -> np.ndarray:
    """Fraction of quiescent galaxies at a given stellar mass (half at 10^10.6, cf. Peng et al. 2010)."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(log_mass) - 10.6) / 0.25))


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    """n Dirichlet draws written as normalised Gamma variates, so each row may have its own alpha."""
    gamma = rng.gamma(np.broadcast_to(alpha, (n, alpha.shape[-1])))
    return gamma / gamma.sum(axis=1, keepdims=True)


def _component_coefficients(
    rng: np.random.Generator, templates: Templates, old_mix: np.ndarray, log_ssfr: np.ndarray, stellar_mass: np.ndarray
) -> np.ndarray:
    """Template coefficients (solar masses formed) of a component with this sSFR and stellar mass.

    The young fraction f of the mass formed solves sSFR = f m300_y / (300 Myr ((1-f) r_o + f r_y)),
    with m300_y the young mix's fraction formed in the last 300 Myr and r_o, r_y the stellar mass
    remaining per unit formed of the old and young mixes.
    """
    n = len(stellar_mass)
    old = _dirichlet(rng, old_mix, n)
    young = _dirichlet(rng, _YOUNG_MIX, n)
    r_old = old @ templates.mass_remaining[_OLD_TEMPLATES]
    r_young = young @ templates.mass_remaining[_YOUNG_TEMPLATES]
    m300_young = young @ templates.formed_last_300myr[_YOUNG_TEMPLATES]
    s = 10.0**log_ssfr * 3e8
    f = np.clip(s * r_old / (m300_young + s * (r_old - r_young)), 0.0, 0.5)
    weights = np.zeros((n, templates.n_templates))
    weights[:, _OLD_TEMPLATES] = (1.0 - f)[:, None] * old
    weights[:, _YOUNG_TEMPLATES] = f[:, None] * young
    return weights * (stellar_mass / (weights @ templates.mass_remaining))[:, None]


def _size_arcsec(rng, log_mass, relation, z) -> np.ndarray:
    a, alpha, scatter = relation
    log_r = a + alpha * (log_mass - np.log10(5e10)) + rng.normal(0, scatter, len(log_mass))
    d_a_kpc = Planck18.angular_diameter_distance(z).to_value("kpc")
    return 10.0**log_r / d_a_kpc * 206264.806


def physical_properties(templates: Templates, coefficients: np.ndarray, z: np.ndarray) -> pd.DataFrame:
    """True stellar mass, sSFR and mass-weighted age implied by the template mix.

    SFR is the mass formed in the last 300 Myr divided by 300 Myr, and sSFR = SFR / M*. The age
    is weighted by mass formed, with the templates' three star-formation bins taken at their
    mid-points (0.15 and 0.65 Gyr) and the mass formed earlier spread evenly between 1 Gyr and
    the age of the universe at z: the kcorrect metadata allow no finer history. The metallicity
    (Z_MW) is not the mix's: it is drawn per galaxy (``metallicity.draw_stellar_metallicity``).
    """
    mass_left = coefficients * templates.mass_remaining
    stellar_mass = mass_left.sum(axis=1)
    sfr = (coefficients @ templates.formed_last_300myr) / 3e8
    formed = coefficients.sum(axis=1)
    young = coefficients @ templates.formed_last_300myr
    middle = coefficients @ (templates.formed_last_1gyr - templates.formed_last_300myr)
    old = formed - young - middle
    old_age = 0.5 * (1.0 + Planck18.age(z).to_value("Gyr"))
    age = (0.15 * young + 0.65 * middle + old_age * old) / formed
    return pd.DataFrame(
        {
            "LOGMSTAR": np.log10(stellar_mass),
            "SSFR": np.log10(np.maximum(sfr / stellar_mass, 1e-14)),
            "AGE": age,
        }
    )


def _draw_candidates(rng: np.random.Generator, spec: PopulationSpec, n: int, templates: Templates) -> pd.DataFrame:
    z = _draw_redshift(rng, n, spec.z_min, spec.z_max)
    log_mass = _draw_log_mass(rng, n)
    quiescent = rng.uniform(size=n) < quiescent_fraction(log_mass)
    bulge_fraction = np.where(quiescent, rng.beta(5.0, 2.0, n), rng.beta(1.5, 5.0, n))
    mass = 10.0**log_mass
    quiescent_ssfr = rng.normal(*_QUIESCENT_SEQUENCE, n)
    a, slope, scatter = _MAIN_SEQUENCE
    disk_ssfr = np.where(quiescent, quiescent_ssfr, rng.normal(a + slope * (log_mass - 10.0), scatter))
    # Bulges are old whatever the galaxy; the disk carries the galaxy's star formation.
    bulge_ssfr = rng.normal(*_QUIESCENT_SEQUENCE, n)
    bulge = _component_coefficients(rng, templates, _OLD_MIX_QUIESCENT, bulge_ssfr, mass * bulge_fraction)
    disk_old_mix = np.where(quiescent[:, None], _OLD_MIX_QUIESCENT, _OLD_MIX_STAR_FORMING)
    disk = _component_coefficients(rng, templates, disk_old_mix, disk_ssfr, mass * (1.0 - bulge_fraction))
    # Dusty star-forming galaxies, more so when massive; quiescent ones nearly dust-free.
    av = np.where(
        quiescent,
        rng.exponential(0.1, n),
        np.clip(0.25 + 0.3 * (log_mass - 9.5), 0.05, 1.2) * rng.lognormal(0.0, 0.4, n),
    )
    av = np.clip(av, 0.0, 2.5)
    # One metallicity for all of a galaxy's stars, so that it is both the mass- and light-weighted one.
    metallicity = draw_stellar_metallicity(rng, log_mass)
    columns = {"Z": z, "QUIESCENT": quiescent, "BULGE_FRAC": bulge_fraction, "AV": av, "Z_MW": metallicity}
    for t in range(templates.n_templates):
        columns[f"COEF_BULGE_{t}"] = bulge[:, t]
        columns[f"COEF_DISK_{t}"] = disk[:, t]
    return pd.DataFrame(columns)


def component_coefficients(galaxies: pd.DataFrame, component: str) -> np.ndarray:
    """(n, n_templates) template coefficients of the ``"BULGE"`` or ``"DISK"`` component."""
    names = sorted(c for c in galaxies.columns if c.startswith(f"COEF_{component}_"))
    return galaxies[names].to_numpy()


def _unique_target_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    ids = np.unique(rng.integers(*_TARGETID_RANGE, size=n, dtype=np.int64))
    while ids.size < n:  # collisions are rare in a 1.3e13 range; redraw the shortfall
        ids = np.unique(np.concatenate([ids, rng.integers(*_TARGETID_RANGE, size=n - ids.size, dtype=np.int64)]))
    return rng.permutation(ids)


def draw_population(spec: PopulationSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Draw ``spec.n_galaxies`` galaxies brighter than the r-band limit, with their true properties.

    Fluxes are in nanomaggies (FLUX_*), per component (FLUX_BULGE_*, FLUX_DISK_*) and in total,
    at the galaxy's stellar metallicity Z_MW (mass fraction); the morphology columns are those of
    ``morphology.draw_morphology``.
    """
    templates = load_templates()
    table = photometry_table()
    accepted: list[pd.DataFrame] = []
    n_accepted = 0
    while n_accepted < spec.n_galaxies:
        batch = _draw_candidates(rng, spec, 100_000, templates)
        flux_bulge, flux_disk = (
            maggies_to_nanomaggies(table.maggies(component_coefficients(batch, part), batch.Z, batch.AV, batch.Z_MW))
            for part in ("BULGE", "DISK")
        )
        for b, band in enumerate(BANDS):
            batch[f"FLUX_BULGE_{band.upper()}"] = flux_bulge[:, b]
            batch[f"FLUX_DISK_{band.upper()}"] = flux_disk[:, b]
            batch[f"FLUX_{band.upper()}"] = flux_bulge[:, b] + flux_disk[:, b]
        limit = 10.0 ** (-0.4 * (spec.mag_limit_r - 22.5))
        keep = batch[batch.FLUX_R > limit]
        accepted.append(keep)
        n_accepted += len(keep)
    galaxies = pd.concat(accepted, ignore_index=True).iloc[: spec.n_galaxies].reset_index(drop=True)

    n = len(galaxies)
    coefficients = component_coefficients(galaxies, "BULGE") + component_coefficients(galaxies, "DISK")
    galaxies = pd.concat([galaxies, physical_properties(templates, coefficients, galaxies.Z.to_numpy())], axis=1)
    log_mass = galaxies.LOGMSTAR.to_numpy()
    galaxies["RE_DISK"] = _size_arcsec(rng, log_mass, _SIZE_LATE, galaxies.Z)
    # Bulges follow the early-type relation, scaled down: they are the compact part of the galaxy.
    galaxies["RE_BULGE"] = 0.5 * _size_arcsec(rng, log_mass, _SIZE_EARLY, galaxies.Z)
    galaxies["Q_DISK"] = rng.uniform(0.2, 1.0, n)
    galaxies["Q_BULGE"] = rng.uniform(0.6, 1.0, n)
    galaxies["PA"] = rng.uniform(0.0, 180.0, n)
    galaxies.insert(0, "TARGETID", _unique_target_ids(rng, n))
    ra_lo, ra_hi = spec.ra_range
    sin_lo, sin_hi = np.sin(np.radians(spec.dec_range))
    galaxies.insert(1, "RA", rng.uniform(ra_lo, ra_hi, n))
    galaxies.insert(2, "DEC", np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n))))
    # Drawn last, so that adding morphology left every earlier draw (and so the spectra) unchanged.
    morphology = draw_morphology(galaxies, rng)
    smooth = ~morphology.FEATURED.to_numpy()
    for column in ("Q_DISK", "Q_BULGE"):  # a smooth galaxy is one ellipsoid: both components share q
        galaxies[column] = np.where(smooth, morphology.Q_SMOOTH, galaxies[column])
    return pd.concat([galaxies, morphology.drop(columns="Q_SMOOTH")], axis=1)
