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
