"""DESI-like spectra of mock galaxies: fibre flux on the coadd grid, with a DESI-like noise model.

The noise-free spectrum is the galaxy's template mix at its stellar metallicity (``metallicity.py``),
redshifted and dimmed, seen through a 1.5"
fibre (bulge and disk enter with their own aperture fractions, so the spectrum is redder than the
total photometry for bulgy galaxies, as in real fibre spectra). The noise has three parts: sky
background with the bright night-sky lines (5577 Å [O I], Na D, [O I] 6300/6364 and the OH forest
in the red), a throughput that falls off at both ends of the spectrograph, and shot noise from the
object; the depth varies from target to target like the effective exposure time does. A few pixels
are masked (cosmic rays, bad CCD columns): their ivar is 0 and, as in DESI coadds, their flux 0.
"""

import numpy as np
import pandas as pd

from ..desi import wavelength_grid
from .population import component_coefficients
from .templates import dust_transmission, load_templates, observed_template_flux

FIBRE_RADIUS_ARCSEC = 0.75
#: Night-sky emission lines (Å, air) with amplitudes relative to the sky continuum per 0.8 Å pixel.
SKY_LINES = np.array(
    [
        (5577.3, 40.0), (5889.9, 12.0), (5895.9, 10.0), (6300.3, 18.0), (6363.8, 6.0),
        (6863.9, 8.0), (6923.2, 6.0), (7276.4, 10.0), (7316.3, 12.0), (7340.9, 12.0),
        (7369.2, 10.0), (7750.6, 14.0), (7794.1, 14.0), (7821.5, 16.0), (7853.9, 12.0),
        (7913.7, 16.0), (7964.6, 18.0), (7993.3, 20.0), (8344.6, 25.0), (8399.2, 22.0),
        (8430.2, 22.0), (8465.2, 25.0), (8505.0, 22.0), (8761.3, 22.0), (8827.1, 28.0),
        (8885.8, 28.0), (8919.6, 24.0), (8958.1, 30.0), (8988.4, 30.0), (9375.9, 30.0),
        (9439.7, 32.0), (9519.2, 30.0), (9567.6, 28.0), (9793.2, 34.0),
    ]
)  # fmt: skip
SKY_LINE_SIGMA = 0.8  # Å: the lines are unresolved at DESI's ~1.8 Å FWHM
#: Noise per native 0.8 Å pixel at peak throughput on the sky continuum, in 1e-17 erg/s/cm²/Å.
SKY_SIGMA = 0.6
#: Object shot noise: variance per unit flux (1e-17 erg/s/cm²/Å) per native pixel.
SHOT_NOISE = 0.02
MASK_BADPIX = 1  # the one mask bit the mock sets


def fibre_fraction(half_light_radius: np.ndarray, psf_fwhm: float) -> np.ndarray:
    """Fraction of a component's light inside the 1.5" fibre, treating the seeing-convolved
    profile as a Gaussian with the same half-light radius (good to ~10% for these sizes)."""
    sigma2 = (np.asarray(half_light_radius) / 1.1774) ** 2 + (psf_fwhm / 2.3548) ** 2
    return 1.0 - np.exp(-(FIBRE_RADIUS_ARCSEC**2) / (2.0 * sigma2))


def model_spectra(galaxies: pd.DataFrame, wavelength: np.ndarray, psf_fwhm: float = 1.3) -> np.ndarray:
    """Noise-free fibre spectra (n, n_wave) in 1e-17 erg/s/cm²/Å at the pixel centres ``wavelength``."""
    templates = load_templates()
    z = galaxies.Z.to_numpy()
    out = np.empty((len(galaxies), wavelength.size), dtype=np.float32)
    chunk = 256  # bounds memory at the full 7781-pixel grid
    for start in range(0, len(galaxies), chunk):
        part = slice(start, start + chunk)
        per_template = observed_template_flux(templates, z[part], wavelength, galaxies.Z_MW.to_numpy()[part])
        fibre = np.zeros((per_template.shape[0], templates.n_templates))
        for component in ("BULGE", "DISK"):
            fraction = fibre_fraction(galaxies[f"RE_{component}"].to_numpy()[part], psf_fwhm)
            fibre += component_coefficients(galaxies.iloc[part], component) * fraction[:, None]
        flux = np.einsum("nt,ntw->nw", fibre, per_template)
        rest = wavelength[None, :] / (1.0 + z[part, None])
        flux *= 10.0 ** (-0.4 * galaxies.AV.to_numpy()[part, None] * _calzetti_over_rv(rest))
        out[part] = flux * 1e17
    return out


def _calzetti_over_rv(rest_wavelength: np.ndarray) -> np.ndarray:
    # -2.5 log10 of the transmission at A_V = 1, i.e. k(λ)/R_V.
    return -2.5 * np.log10(dust_transmission(rest_wavelength, 1.0))


def sky_and_throughput(rebin: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative sky brightness and throughput on the (rebinned) grid.

    The sky is built on the native 0.8 Å pixels and averaged into bins, so that lines keep their flux.
    """
    native = wavelength_grid(1)
    sky = np.ones_like(native)
    for centre, amplitude in SKY_LINES:
        sky += amplitude * np.exp(-0.5 * ((native - centre) / SKY_LINE_SIGMA) ** 2)
    # Throughput: peaks in the red arm, falls towards the atmospheric cut-off and the CCD's red edge.
    throughput = 0.08 + 0.27 * np.exp(-0.5 * ((native - 6800.0) / 1900.0) ** 2)
    n = native.size // rebin
    sky = sky[: n * rebin].reshape(n, rebin).mean(axis=1)
    throughput = throughput[: n * rebin].reshape(n, rebin).mean(axis=1)
    return sky, throughput / throughput.max()


def observe_spectra(
    model: np.ndarray, rebin: int, rng: np.random.Generator, masked_pixel_fraction: float = 0.002
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add DESI-like noise to noise-free spectra on the grid ``wavelength_grid(rebin)``.

    Returns flux, ivar (both float32) and a uint32 mask (0 = good), as DESI coadds store them.
    """
    n, n_wave = model.shape
    sky, throughput = sky_and_throughput(rebin)
    depth = rng.lognormal(0.0, 0.25, size=(n, 1))  # effective exposure time, target to target
    variance = (SKY_SIGMA**2 * sky + SHOT_NOISE * np.clip(model, 0.0, None)) / throughput**2 / depth
    variance /= rebin  # averaging `rebin` native pixels
    flux = model + rng.standard_normal((n, n_wave)) * np.sqrt(variance)
    ivar = 1.0 / variance

    mask = np.zeros((n, n_wave), dtype=np.uint32)
    mask[rng.uniform(size=(n, n_wave)) < masked_pixel_fraction] = MASK_BADPIX
    # One spectrum in ten crosses a bad CCD column: a run of masked pixels (~5-30 native pixels).
    columns = np.flatnonzero(rng.uniform(size=n) < 0.1)
    starts = rng.integers(0, n_wave, size=columns.size)
    lengths = np.maximum(1, rng.integers(5, 30, size=columns.size) // rebin)
    for row, start, length in zip(columns, starts, lengths, strict=True):
        mask[row, start : start + length] = MASK_BADPIX
    bad = mask != 0
    flux[bad] = 0.0
    ivar[bad] = 0.0
    return flux.astype(np.float32), ivar.astype(np.float32), mask
