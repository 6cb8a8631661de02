"""Facts about DESI spectra that every source shares: the coadd wavelength grid and flux unit."""

import numpy as np

#: The combined b+r+z coadd grid of DESI: 3600-9824 Å in 0.8 Å steps (7781 pixels).
WAVELENGTH_MIN = 3600.0
WAVELENGTH_STEP = 0.8
N_PIXELS = 7781
#: DESI coadd flux unit (BUNIT of the *_FLUX HDUs), kept in every file the pipeline writes.
FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"


def wavelength_grid(rebin: int = 1) -> np.ndarray:
    """Pixel centres of the DESI coadd grid in Å, coarsened by averaging ``rebin`` pixels.

    ``rebin=1`` is the survey's own 7781-pixel grid; a larger factor gives the laptop grid
    (the trailing pixels that do not fill a whole bin are dropped).
    """
    if rebin < 1:
        raise ValueError(f"rebin must be a positive integer, got {rebin}")
    native = WAVELENGTH_MIN + WAVELENGTH_STEP * np.arange(N_PIXELS)
    n = N_PIXELS // rebin
    return native[: n * rebin].reshape(n, rebin).mean(axis=1)


# -- pixel validity --------------------------------------------------------------------------------
#
# DESI's own pixel mask bits (desispec.maskbits: specmask 0-10, ccdmask 0-9) say why the survey
# distrusts a pixel. A value can also be unusable without the survey saying so (a NaN flux, an
# infinite or negative ivar, a float that overflows float32), so the pipeline adds its own bits,
# above every bit desispec defines for pixels, and every source passes its spectra through
# :func:`flag_invalid_pixels` before they reach a raw shard.

#: The flux is NaN or infinite (also after conversion to float32).
NONFINITE_FLUX = 1 << 24
#: The inverse variance is NaN, infinite or negative.
BAD_IVAR = 1 << 25
#: ivar is 0 (no weight) although the survey set no mask bit: not a measurement either.
NO_WEIGHT = 1 << 26
#: Bit value -> name, for the README and for messages.
PIPELINE_MASK_BITS = {NONFINITE_FLUX: "NONFINITE_FLUX", BAD_IVAR: "BAD_IVAR", NO_WEIGHT: "NO_WEIGHT"}


def flag_invalid_pixels(flux, ivar, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux, ivar and mask (same shape, any) with every pixel that is not a valid measurement flagged.

    A pixel is a valid measurement when its flux and ivar are finite as float32 and ivar > 0. Any
    other pixel gets ivar 0 and a mask bit that says why: :data:`NONFINITE_FLUX` (its flux is also
    set to 0, so that no NaN travels on), :data:`BAD_IVAR`, or :data:`NO_WEIGHT` (ivar 0 with no
    survey bit). The survey's own bits are kept. Returns float32 flux and ivar, uint32 mask;
    ``mask=None`` means no survey bits. The inputs are not modified.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 beyond float32's range becomes inf: flagged
        flux = np.array(flux, dtype=np.float32)
        ivar = np.array(ivar, dtype=np.float32)
    if flux.shape != ivar.shape:
        raise ValueError(f"flux has shape {flux.shape} but ivar {ivar.shape}")
    mask = np.zeros(flux.shape, np.uint32) if mask is None else np.asarray(mask).astype(np.int64) & 0xFFFFFFFF
    if mask.shape != flux.shape:
        raise ValueError(f"flux has shape {flux.shape} but mask {mask.shape}")
    mask = mask.astype(np.uint32)
    bad_flux = ~np.isfinite(flux)
    bad_ivar = ~np.isfinite(ivar) | (ivar < 0)
    mask[bad_flux] |= NONFINITE_FLUX
    mask[bad_ivar] |= BAD_IVAR
    flux[bad_flux] = 0.0
    ivar[bad_flux | bad_ivar] = 0.0
    mask[(ivar == 0) & (mask == 0)] |= NO_WEIGHT
    return flux, ivar, mask


def has_valid_pixel(ivar: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row of (n, n_pix) ivar and mask: True where some pixel has ivar > 0 and mask 0."""
    return np.any((np.asarray(ivar) > 0) & (np.asarray(mask) == 0), axis=-1)


def rebin_spectra(flux: np.ndarray, ivar: np.ndarray, rebin: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectra on a grid coarsened by ``rebin`` (as :func:`wavelength_grid` coarsens it).

    Each new pixel is the inverse-variance-weighted mean of ``rebin`` adjacent pixels, and its ivar
    the sum of theirs (the inverse variance of that mean); a new pixel without weight gets flux 0
    and ivar 0. The trailing pixels that do not fill a whole bin are dropped.

    Args:
        flux, ivar: (..., n_pix) in any flux unit and its inverse square.
    Returns:
        (flux, ivar), each (..., n_pix // rebin), float64.
    """
    if rebin < 1:
        raise ValueError(f"rebin must be a positive integer, got {rebin}")
    n = flux.shape[-1] // rebin
    f = np.asarray(flux, dtype=np.float64)[..., : n * rebin].reshape(*flux.shape[:-1], n, rebin)
    w = np.asarray(ivar, dtype=np.float64)[..., : n * rebin].reshape(*flux.shape[:-1], n, rebin)
    weight = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(weight > 0, (f * w).sum(axis=-1) / weight, 0.0)
    return mean, weight
