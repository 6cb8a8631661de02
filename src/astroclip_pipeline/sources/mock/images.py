"""Legacy-Survey-like g, r, z cutouts of mock galaxies, rendered with GalSim.

Each galaxy is a de Vaucouleurs bulge plus an exponential disk, each with its own fluxes from its
own template mix (so colour gradients are physical: red bulge, bluer disk), sheared to its axis
ratio and position angle, convolved with a Moffat PSF and drawn at 0.262"/pixel in nanomaggies.
Faint neighbours fall in the field, Gaussian sky noise is added at Legacy Survey DR9 depth, and a
known fraction of cutouts carry an imaging artefact.

One PSF serves all three bands (the DR9 median seeing differs by ~0.2" between g and z); that
keeps two GalSim draws per galaxy instead of six.
"""

import galsim
import numpy as np
import pandas as pd

from .templates import BANDS

PIXEL_SCALE = 0.262
#: DR9 median 5-sigma point-source depths (AB) in g, r, z.
DEPTH_5SIGMA = {"g": 24.0, "r": 23.4, "z": 22.5}
MOFFAT_BETA = 3.5
ARTEFACT_KINDS = ("none", "star", "streak", "missing")


def sky_sigma(psf_fwhm: float, pixel_scale: float = PIXEL_SCALE) -> np.ndarray:
    """Per-pixel sky noise (nanomaggies) in g, r, z that gives the DR9 5-sigma point-source depths.

    A point source measured with an optimal PSF-weighted aperture has flux error
    sigma_pix * sqrt(4 pi sigma_psf^2) (Gaussian PSF, sigma_psf in pixels).
    """
    sigma_psf = psf_fwhm / 2.3548 / pixel_scale
    n_eff = 4.0 * np.pi * sigma_psf**2
    five_sigma_flux = np.array([10.0 ** (-0.4 * (DEPTH_5SIGMA[b] - 22.5)) for b in BANDS])
    return five_sigma_flux / 5.0 / np.sqrt(n_eff)


def _draw_unit(profile: galsim.GSObject, psf: galsim.GSObject, size: int, pixel_scale: float, offset=None):
    image = galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=pixel_scale, offset=offset)
    return image.array.astype(np.float64)


def _neighbours(rng: np.random.Generator, size: int, pixel_scale: float, psf, rate: float) -> np.ndarray:
    """Faint field galaxies at random places in the stamp, away from the target: (3, size, size)."""
    out = np.zeros((len(BANDS), size, size))
    for _ in range(rng.poisson(rate)):
        radius = rng.uniform(8.0, size / 2.0)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        profile = galsim.Exponential(half_light_radius=rng.uniform(0.3, 1.5)).shear(
            q=rng.uniform(0.3, 1.0), beta=rng.uniform(0.0, 180.0) * galsim.degrees
        )
        unit = _draw_unit(profile, psf, size, pixel_scale, offset=(radius * np.cos(angle), radius * np.sin(angle)))
        mag_r = rng.uniform(19.0, 23.0)
        mags = np.array([mag_r + rng.normal(0.7, 0.3), mag_r, mag_r - rng.normal(0.4, 0.2)])
        out += 10.0 ** (-0.4 * (mags - 22.5))[:, None, None] * unit
    return out


def _add_saturated_star(image: np.ndarray, rng: np.random.Generator, psf_fwhm: float, pixel_scale: float) -> None:
    """A bright star off the target: a Moffat core clipped at saturation plus diffraction spikes."""
    size = image.shape[-1]
    x0, y0 = rng.uniform(0.1 * size, 0.9 * size, 2)
    mag_r = rng.uniform(11.0, 14.0)
    colour = 10.0 ** (-0.4 * np.array([0.5, 0.0, -0.3]))  # g-r 0.5, r-z 0.3: a G/K star
    flux = 10.0 ** (-0.4 * (mag_r - 22.5)) * colour
    star = galsim.Moffat(beta=MOFFAT_BETA, fwhm=psf_fwhm).drawImage(
        nx=size, ny=size, scale=pixel_scale, offset=(x0 - size / 2.0, y0 - size / 2.0)
    )
    y, x = np.mgrid[0:size, 0:size]
    spike_angle = rng.uniform(0.0, np.pi / 2.0)
    u = (x - x0) * np.cos(spike_angle) + (y - y0) * np.sin(spike_angle)
    v = -(x - x0) * np.sin(spike_angle) + (y - y0) * np.cos(spike_angle)
    length = rng.uniform(10.0, 30.0)
    spikes = np.exp(-np.abs(u) / length) * np.exp(-0.5 * v**2) + np.exp(-np.abs(v) / length) * np.exp(-0.5 * u**2)
    for band in range(len(BANDS)):
        light = flux[band] * star.array + 0.002 * flux[band] * spikes
        image[band] += np.minimum(light, 30.0)  # saturated pixels bleed into a flat plateau


def _add_satellite_streak(image: np.ndarray, rng: np.random.Generator) -> None:
    """A straight trail across the stamp (~1.2 px wide), with roughly solar colours."""
    size = image.shape[-1]
    x0, y0 = rng.uniform(0.2 * size, 0.8 * size, 2)
    theta = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:size, 0:size]
    distance = np.abs((x - x0) * np.sin(theta) - (y - y0) * np.cos(theta))
    brightness = rng.uniform(0.5, 3.0) * np.array([0.8, 1.0, 1.1])
    image += brightness[:, None, None] * np.exp(-0.5 * (distance / 1.2) ** 2)[None]


def _add_missing_region(image: np.ndarray, rng: np.random.Generator) -> None:
    """A region with no coverage (a chip edge): zero in one or more bands, over 15-50% of the stamp."""
    size = image.shape[-1]
    width = int(rng.uniform(0.15, 0.5) * size)
    bands = rng.permutation(len(BANDS))[: rng.integers(1, len(BANDS) + 1)]
    region = [slice(None), slice(None)]
    region[rng.integers(0, 2)] = slice(size - width, size) if rng.uniform() < 0.5 else slice(0, width)
    for band in bands:
        image[band][tuple(region)] = 0.0


def render_cutouts(
    galaxies: pd.DataFrame,
    size: int,
    rng: np.random.Generator,
    psf_fwhm: float = 1.3,
    pixel_scale: float = PIXEL_SCALE,
    neighbour_rate: float = 1.0,
    noise: bool = True,
) -> np.ndarray:
    """(n, 3, size, size) float32 grz cutouts in nanomaggies, centred on each galaxy.

    ``galaxies`` carries the population's columns (fluxes per component and band, sizes, shapes)
    and ``ARTEFACT`` (an index into ``ARTEFACT_KINDS``).
    """
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=psf_fwhm)
    sigma = sky_sigma(psf_fwhm, pixel_scale)
    max_radius = size * pixel_scale / 4.0  # keep each galaxy inside its own stamp
    out = np.empty((len(galaxies), len(BANDS), size, size), dtype=np.float32)
    for i, g in enumerate(galaxies.itertuples(index=False)):
        shear = {"beta": g.PA * galsim.degrees}
        bulge = galsim.DeVaucouleurs(half_light_radius=float(np.clip(g.RE_BULGE, 0.05, max_radius)))
        disk = galsim.Exponential(half_light_radius=float(np.clip(g.RE_DISK, 0.05, max_radius)))
        centre = tuple(rng.uniform(-0.5, 0.5, 2))  # the target is not exactly on a pixel centre
        unit_bulge = _draw_unit(bulge.shear(q=g.Q_BULGE, **shear), psf, size, pixel_scale, centre)
        unit_disk = _draw_unit(disk.shear(q=g.Q_DISK, **shear), psf, size, pixel_scale, centre)
        image = np.stack(
            [
                getattr(g, f"FLUX_BULGE_{b.upper()}") * unit_bulge + getattr(g, f"FLUX_DISK_{b.upper()}") * unit_disk
                for b in BANDS
            ]
        )
        if neighbour_rate > 0:
            image += _neighbours(rng, size, pixel_scale, psf, neighbour_rate)
        kind = ARTEFACT_KINDS[g.ARTEFACT]
        if kind == "star":
            _add_saturated_star(image, rng, psf_fwhm, pixel_scale)
        elif kind == "streak":
            _add_satellite_streak(image, rng)
        if noise:
            image += sigma[:, None, None] * rng.standard_normal(image.shape)
        if kind == "missing":
            _add_missing_region(image, rng)
        out[i] = image
    return out
