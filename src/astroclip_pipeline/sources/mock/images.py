"""Legacy-Survey-like g, r, z cutouts of mock galaxies, rendered with GalSim.

Each galaxy is a de Vaucouleurs bulge plus an exponential disk, each with its own fluxes from its
own template mix (so colour gradients are physical: red bulge, bluer disk), sheared to its axis
ratio and position angle, convolved with a Moffat PSF and drawn at 0.262"/pixel in nanomaggies.
A disk with structure (``morphology.py``: spiral arms, a bar, a tidal tail) is drawn on a 3x
oversampled grid in its own plane, projected to its inclination, convolved with the same PSF and
binned to pixels; a merger's companion is a second galaxy beside it. Faint neighbours fall in the
field, Gaussian sky noise is added at Legacy Survey DR9 depth, and a known fraction of cutouts
carry an imaging artefact.

One PSF serves all three bands (the DR9 median seeing differs by ~0.2" between g and z); that
keeps two GalSim draws per galaxy instead of six.
"""

import galsim
import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from .morphology import BAR_LIGHT, TAIL_LIGHT
from .templates import BANDS

PIXEL_SCALE = 0.262
#: DR9 median 5-sigma point-source depths (AB) in g, r, z.
DEPTH_5SIGMA = {"g": 24.0, "r": 23.4, "z": 22.5}
MOFFAT_BETA = 3.5
ARTEFACT_KINDS = ("none", "star", "streak", "missing")
_OVERSAMPLE = 3
#: Exponential profile: half-light radius / scale length.
_EXP_HALF_LIGHT = 1.678
#: Share of a spiral disk's light that its arms concentrate (the rest is the smooth disk).
_ARM_AMPLITUDE = 0.8
_MERGER = 3


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


def _fine_coordinates(size: int, pixel_scale: float, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Sky offsets (arcsec, x and y) of the sub-pixel centres from the galaxy's centre.

    GalSim puts a profile drawn with ``offset`` at 0-based pixel (size - 1) / 2 + offset; so do we.
    """
    axis = (np.arange(size * _OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    x = (axis - (size - 1) / 2.0 - centre[0]) * pixel_scale
    y = (axis - (size - 1) / 2.0 - centre[1]) * pixel_scale
    return np.meshgrid(x, y)  # arrays indexed [y, x], as GalSim's


def _unit(light: np.ndarray) -> np.ndarray:
    return light / light.sum()


def _spiral_arms(r_h: np.ndarray, theta: np.ndarray, arms: int, pitch_deg: float, phase: float) -> np.ndarray:
    """Relative brightness of ``arms`` logarithmic spiral arms (mean ~1), faded out in the centre."""
    arm = (1.0 + np.cos(arms * (theta - np.log(np.maximum(r_h, 1e-3)) / np.tan(np.radians(pitch_deg))) - phase)) / 2.0
    arm = arm**3 / (5.0 / 16.0)  # the mean of ((1 + cos) / 2)^3 is 5/16
    taper = 1.0 - np.exp(-(r_h**2))
    return 1.0 - _ARM_AMPLITUDE * taper + _ARM_AMPLITUDE * taper * arm


def _structured_disk(g, size: int, pixel_scale: float, centre, half_light: float, psf_image: np.ndarray):
    """(disk, tail) unit-flux images of a disk with arms and/or a bar, and its tidal tail (or None).

    The disk is drawn in its own plane (x along the major axis, y = sky minor axis / q) and so
    projected to its inclination; a bar in an edge-on disk is drawn in the sky plane with boxy
    isophotes (what a bar seen side-on looks like: a boxy or peanut bulge). Returns arrays
    (size, size): binned from the 3x oversampled grid (which integrates over each pixel), then
    convolved with the PSF sampled at the pixels (``psf_image``): binning first costs a ninth of
    the FFT work, for a difference well below the sky noise.
    """
    x, y = _fine_coordinates(size, pixel_scale, centre)
    pa = np.radians(g.PA)
    u = x * np.cos(pa) + y * np.sin(pa)
    v = -x * np.sin(pa) + y * np.cos(pa)
    h = half_light / _EXP_HALF_LIGHT
    xd, yd = u / h, v / g.Q_DISK / h  # disk-plane coordinates in scale lengths
    r_h = np.hypot(xd, yd)
    plain = np.exp(-r_h)
    disk = plain
    if g.ARMS > 0:
        disk = plain * _spiral_arms(r_h, np.arctan2(yd, xd), g.ARMS, g.PITCH, g.ARM_PHASE)
        disk *= plain.sum() / disk.sum()  # the arms gather the disk's light, they add none
    # Unit flux over the whole disk (2π h² q, in fine pixels), so that the light beyond the stamp
    # is lost as GalSim loses it for disks drawn without structure; the grid's own sum where it is
    # larger (a disk a few fine pixels across, whose cusp the grid oversamples).
    whole_disk = 2.0 * np.pi * h**2 * g.Q_DISK / (pixel_scale / _OVERSAMPLE) ** 2
    disk = disk / max(plain.sum(), whole_disk)
    if g.BAR > 0:
        length = 1.2  # scale lengths
        if g.EDGE_ON:
            bar = np.exp(-((np.abs(u / h) / length) ** 4) - (np.abs(v / h) / (0.45 * length)) ** 4)
        else:
            angle = np.radians(g.BAR_ANGLE)
            xb = xd * np.cos(angle) + yd * np.sin(angle)
            yb = -xd * np.sin(angle) + yd * np.cos(angle)
            # A Ferrers-like flat-topped bar, 1:4, projected with the disk.
            bar = np.exp(-((np.abs(xb) / length) ** 4) - (yb / (0.25 * length)) ** 2)
        fraction = BAR_LIGHT[g.BAR]
        disk = (1.0 - fraction) * disk + fraction * _unit(bar)
    tail = None
    if TAIL_LIGHT[g.MERGER] > 0:
        # A tidal tail (or a merger's bridge): one loose trailing arm in the sky plane, from 1 to ~5
        # scale lengths, whatever the disk's inclination.
        r_s = np.hypot(x, y) / h
        theta = np.arctan2(y, x) - np.radians(g.TAIL_ANGLE)
        swing = (1.0 + np.cos(theta - np.log(np.maximum(r_s, 1e-3)) / np.tan(np.radians(40.0)))) / 2.0
        tail = _unit(swing**8 * r_s * np.exp(-r_s / 1.5))
    binned = []
    for image in (disk, tail):
        if image is None:
            binned.append(None)
            continue
        pixels = image.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))
        binned.append(fftconvolve(pixels, psf_image, mode="same"))
    return binned[0], binned[1]


def _has_structure(g) -> bool:
    return bool(g.ARMS > 0 or g.BAR > 0 or TAIL_LIGHT[g.MERGER] > 0)


def _companion(g, psf, size: int, pixel_scale: float, centre, half_light: float) -> np.ndarray:
    """(3, size, size) a merging companion of the galaxy's colours, COMPANION_SEPARATION disk
    half-light radii away (kept inside the stamp), with COMPANION_FLUX_RATIO of its flux."""
    separation = min(g.COMPANION_SEPARATION * half_light / pixel_scale, 0.35 * size)
    angle = np.radians(g.COMPANION_ANGLE)
    offset = (centre[0] + separation * np.cos(angle), centre[1] + separation * np.sin(angle))
    profile = galsim.Exponential(half_light_radius=0.7 * half_light).shear(q=0.7, beta=g.PA * galsim.degrees)
    unit = _draw_unit(profile, psf, size, pixel_scale, offset)
    flux = np.array([getattr(g, f"FLUX_{b.upper()}") for b in BANDS]) * g.COMPANION_FLUX_RATIO
    return flux[:, None, None] * unit


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

    ``galaxies`` carries the population's columns (fluxes per component and band, sizes, shapes,
    the morphology of ``morphology.draw_morphology``) and ``ARTEFACT`` (an index into
    ``ARTEFACT_KINDS``). A merger's companion adds light beyond the galaxy's catalogue flux.
    """
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=psf_fwhm)
    # Odd-sized, so that the PSF's centre is a pixel centre and "same" convolution does not shift.
    n_psf = size + 1 - size % 2
    psf_image = psf.drawImage(nx=n_psf, ny=n_psf, scale=pixel_scale, method="no_pixel").array
    sigma = sky_sigma(psf_fwhm, pixel_scale)
    max_radius = size * pixel_scale / 4.0  # keep each galaxy inside its own stamp
    out = np.empty((len(galaxies), len(BANDS), size, size), dtype=np.float32)
    for i, g in enumerate(galaxies.itertuples(index=False)):
        shear = {"beta": g.PA * galsim.degrees}
        bulge = galsim.DeVaucouleurs(half_light_radius=float(np.clip(g.RE_BULGE, 0.05, max_radius)))
        disk_half_light = float(np.clip(g.RE_DISK, 0.05, max_radius))
        centre = tuple(rng.uniform(-0.5, 0.5, 2))  # the target is not exactly on a pixel centre
        unit_bulge = _draw_unit(bulge.shear(q=g.Q_BULGE, **shear), psf, size, pixel_scale, centre)
        unit_tail, tail_light = None, 0.0
        if _has_structure(g):
            unit_disk, unit_tail = _structured_disk(g, size, pixel_scale, centre, disk_half_light, psf_image)
            tail_light = TAIL_LIGHT[g.MERGER]
        else:
            disk = galsim.Exponential(half_light_radius=disk_half_light)
            unit_disk = _draw_unit(disk.shear(q=g.Q_DISK, **shear), psf, size, pixel_scale, centre)
        fluxes = [(getattr(g, f"FLUX_BULGE_{b.upper()}"), getattr(g, f"FLUX_DISK_{b.upper()}")) for b in BANDS]
        image = np.stack([(1.0 - tail_light) * (fb * unit_bulge + fd * unit_disk) for fb, fd in fluxes])
        if unit_tail is not None:
            image += tail_light * np.array([fb + fd for fb, fd in fluxes])[:, None, None] * unit_tail
        if g.MERGER == _MERGER:
            image += _companion(g, psf, size, pixel_scale, centre, disk_half_light)
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
