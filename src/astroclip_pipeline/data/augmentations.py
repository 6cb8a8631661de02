"""Astronomy augmentations of grz cutouts (nanomaggies), after Stein et al. (2021), on whole batches.

A galaxy's identity does not change when the sky is rotated or mirrored, when it is a little nearer
or further (size jitter), when the seeing is worse (blur), when the exposure is shallower (noise) or
when Galactic dust reddens it; the self-supervised encoder must learn features that ignore these.
Optionally (``max_band_jitter``, not in Stein et al.) each band's flux is also scaled by its own
random factor, so that colour alone no longer tells two views of one galaxy from all others.

Every augmentation works on a batch (batch, bands, H, W) of float tensors on any device, with one
random draw per image (and per band where bands differ), so a GPU applies them at the speed of a
convolution. Rotation, flips, scaling and shifts are one affine resampling (bilinear), done on the
full cutout before the centre crop so that no empty corners enter the crop. Pixel values stay in
nanomaggies: resampling keeps surface brightness and the noise is added in nanomaggies.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.image_preprocessing import constant_like

#: Galactic extinction per unit E(B-V) for DECam g, r, z (Schlafly & Finkbeiner 2011, as the Legacy
#: Survey uses): a band's flux is dimmed by 10^(-0.4 R E(B-V)). Stein et al. write these as the
#: exponents -0.4 R = -1.2856, -0.866, -0.4844.
EXTINCTION_R = (3.214, 2.165, 1.211)


@dataclass(frozen=True)
class AugmentationSpec:
    """Ranges of the random draws, in pixels of 0.262"; Stein et al.'s except ``max_ebv``.

    Their code draws E(B-V) up to 1.0, a dimming of the g band by a factor 20 that no galaxy of
    the Legacy Survey footprint (|b| > 18°, E(B-V) mostly below 0.1) shows; 0.05 keeps the
    reddening within what the survey's Galactic dust does between neighbouring galaxies.

    ``max_band_jitter`` (magnitudes) is the half-width of the per-band flux jitter of
    ``random_band_jitter``; 0 (Stein et al., and the default) leaves it out of ``augment``.
    """

    crop: int = 96
    scale: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 7.0
    blur_sigma: tuple[tuple[float, float], ...] = ((1.32, 5.0), (1.27, 4.5), (1.21, 4.25))  # target PSF σ per band
    # the survey's own PSF σ, the blur's starting point; the values of Stein et al.'s code, in pixels
    psf_sigma: tuple[float, ...] = (1.32, 1.27, 1.21)
    blur_probability: float = 0.5
    noise_sigma: tuple[tuple[float, float], ...] = ((0.0011, 0.013), (0.0011, 0.018), (0.0011, 0.061))
    noise_probability: float = 1.0
    max_ebv: float = 0.05
    max_band_jitter: float = 0.0


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` pixels (what the encoders see at validation time)."""
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the {h}x{w} cutouts")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def _draw_device(images: torch.Tensor, generator) -> torch.device:
    """Where an augmentation draws its random numbers: on the images' own device when no generator
    is given (training), so that a GPU step copies nothing from the host, since a copy from pageable
    host memory makes the host wait for the GPU; with a generator (the fixed views of validation
    and of the tests) on the CPU, where ``torch.Generator`` lives. On the CPU both are the CPU, so
    the random stream there is the same either way."""
    return images.device if generator is None else torch.device("cpu")


def _uniform(low: float, high: float, shape, generator, device) -> torch.Tensor:
    """Uniform numbers in [low, high) drawn on ``device`` (see ``_draw_device``)."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def random_affine_crop(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """Rotate by any angle, flip, rescale and shift each image, sampling the output crop directly."""
    batch, _, h, w = images.shape
    device, draw = images.device, _draw_device(images, generator)
    angle = _uniform(0.0, 2 * math.pi, batch, generator, draw).to(device)
    flip = torch.where(torch.rand(batch, generator=generator, device=draw) < 0.5, -1.0, 1.0).to(device)
    scale = _uniform(*spec.scale, batch, generator, draw).to(device)
    shift = _uniform(-spec.max_shift, spec.max_shift, (batch, 2), generator, draw).to(device)
    # The output grid spans the crop; in normalised input coordinates a crop pixel is 2/w wide.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip * spec.crop / w, -sin * spec.crop / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip * spec.crop / h, cos * spec.crop / h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * shift[:, 0] / w, 2 * shift[:, 1] / h
    grid = F.affine_grid(theta, (batch, images.shape[1], spec.crop, spec.crop), align_corners=False)
    # Reflection, not zeros, where a rotated, shrunk or shifted crop reaches past the cutout's edge
    # (it does at laptop scale, 48 of 64 pixels): mirrored sky looks like sky, a black corner does not.
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_crop_flip(images: torch.Tensor, size: int, generator=None) -> torch.Tensor:
    """A ``size`` x ``size`` crop at a random position of each image, flipped left-right and
    up-down each with probability 1/2: AstroDINO's geometric augmentation (torchvision's
    RandomCrop and Random{Horizontal,Vertical}Flip, no resizing), on a whole batch at once."""
    batch, _, h, w = images.shape
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the {h}x{w} cutouts")
    draw, device = _draw_device(images, generator), images.device
    top = torch.randint(h - size + 1, (batch,), generator=generator, device=draw)
    left = torch.randint(w - size + 1, (batch,), generator=generator, device=draw)
    flip = torch.rand(batch, 2, generator=generator, device=draw) < 0.5
    offsets = torch.arange(size, device=draw)
    # a flipped axis reads its pixels backwards: the crop's index runs size-1 .. 0
    rows = top[:, None] + torch.where(flip[:, :1], offsets.flip(0), offsets)
    cols = left[:, None] + torch.where(flip[:, 1:], offsets.flip(0), offsets)
    index = torch.arange(batch, device=draw)[:, None, None]
    crops = images.permute(0, 2, 3, 1)[index.to(device), rows[:, :, None].to(device), cols[:, None, :].to(device)]
    return crops.permute(0, 3, 1, 2).contiguous()


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Blur each (image, band) with its own Gaussian σ (pixels; shape (batch, bands)); σ = 0 is identity.

    The kernel reaches 3 ``max_sigma`` (default: the largest σ, which a GPU tensor would have to
    send to the host first; a caller that knows a bound passes it instead).
    """
    batch, bands, h, w = images.shape
    max_sigma = float(sigma.max()) if max_sigma is None else max_sigma
    radius = max(1, int(math.ceil(3 * max_sigma)))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma.clamp_min(1e-3).reshape(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    flat = images.reshape(1, batch * bands, h, w)
    # Separable: one grouped convolution along each axis, a kernel per (image, band).
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=batch * bands)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=batch * bands)
    return flat.reshape(batch, bands, h, w)


def random_blur(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """Degrade the seeing to a PSF σ drawn per band: convolve with sqrt(σ_target² - σ_survey²)."""
    batch, bands = images.shape[:2]
    draw = _draw_device(images, generator)
    target = torch.stack([_uniform(lo, hi, batch, generator, draw) for lo, hi in spec.blur_sigma[:bands]], dim=1)
    psf = constant_like(spec.psf_sigma[:bands], target)
    extra = (target**2 - psf**2).clamp_min(0).sqrt()
    extra = torch.where(torch.rand(batch, 1, generator=generator, device=draw) < spec.blur_probability, extra, 0.0)
    # On the CPU the kernel reaches 3 times the largest σ drawn, as ever; on a GPU 3 times the
    # largest the spec allows, which needs no copy to the host.
    bound = None
    if draw.type != "cpu":
        widest = [math.sqrt(max(0.0, hi**2 - p**2)) for (_, hi), p in zip(spec.blur_sigma, spec.psf_sigma, strict=True)]
        bound = max(widest[:bands])
    return gaussian_blur(images, extra.to(images.device, images.dtype), bound)


def random_noise(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """Add Gaussian noise with a σ (nanomaggies) drawn per image and band, as from shallower imaging."""
    batch, bands = images.shape[:2]
    draw = _draw_device(images, generator)
    sigma = torch.stack([_uniform(lo, hi, batch, generator, draw) for lo, hi in spec.noise_sigma[:bands]], dim=1)
    if spec.noise_probability < 1.0:  # drawn only then, so the default's random stream is unchanged
        sigma = torch.where(torch.rand(batch, 1, generator=generator, device=draw) < spec.noise_probability, sigma, 0.0)
    noise = torch.randn(images.shape, generator=generator, device=draw).to(images.device)
    return images + sigma.to(images.device)[..., None, None] * noise


def random_reddening(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """Dim each band as Galactic dust of a random E(B-V) in [0, max_ebv] would."""
    batch, bands = images.shape[:2]
    draw = _draw_device(images, generator)
    ebv = _uniform(0.0, spec.max_ebv, (batch, 1), generator, draw)
    factor = 10.0 ** (-0.4 * constant_like(EXTINCTION_R[:bands], ebv) * ebv)
    return images * factor.to(images.device, images.dtype)[..., None, None]


def random_band_jitter(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """Scale band b of each image by 10^(-0.4 Δm_b), Δm_b uniform in ±``max_band_jitter`` mag,
    drawn independently per image and band: a colour jitter in magnitudes.

    Why: on the mock survey MoCo's instance discrimination is solved by colour alone (a linear
    probe of its features recovers g−r with R² 0.94 but disk size and bulge fraction barely
    better than a random network, README "Morphology"). SimCLR (Chen et al. 2020, §3 and
    Fig. 5) found the same of natural images, where crops of one picture share a colour
    histogram, and made colour distortion part of every view; MoCo v2 (Chen et al. 2020b) took
    it over (torchvision's ColorJitter). That jitter works on RGB brightness, contrast,
    saturation and hue; here it is a change of each band's flux, as a zero-point error of the
    band would make, which keeps the pixels in nanomaggies. Stein et al. (2021) left colour
    alone apart from a Galactic reddening, because colour carries redshift; the jitter's width
    trades the two. Measured on the mock (README "Morphology"): it takes the colour shortcut
    away (MoCo's top-1 falls) at a small cost in redshift, but does not make MoCo learn disk
    inclination, so the default stays 0.
    """
    batch, bands = images.shape[:2]
    draw = _draw_device(images, generator)
    delta_mag = _uniform(-spec.max_band_jitter, spec.max_band_jitter, (batch, bands), generator, draw)
    return images * (10.0 ** (-0.4 * delta_mag)).to(images.device, images.dtype)[..., None, None]


def augment(images: torch.Tensor, spec: AugmentationSpec, generator=None) -> torch.Tensor:
    """The full chain: reddening, the per-band jitter (when ``max_band_jitter`` > 0), blur,
    rotation/flip/scale/shift into the crop, then noise."""
    images = random_reddening(images, spec, generator)
    if spec.max_band_jitter > 0:  # drawn only then, so that Stein et al.'s chain and random stream stay as they were
        images = random_band_jitter(images, spec, generator)
    images = random_blur(images, spec, generator)
    images = random_affine_crop(images, spec, generator)
    return random_noise(images, spec, generator)


#: The eight symmetries of the square pixel grid: four rotations by 90°, each with and without a flip.
N_ORIENTATIONS = 8


def dihedral(images: torch.Tensor, orientation: int) -> torch.Tensor:
    """One of the eight exact (loss-free) rotations/flips of a square cutout: 0 is the identity."""
    if orientation >= 4:
        images = images.flip(-1)
    return torch.rot90(images, orientation % 4, dims=(-2, -1))


def random_dihedral(images: torch.Tensor, generator=None) -> torch.Tensor:
    """Each image in its own random one of the eight orientations."""
    draw = _draw_device(images, generator)
    choice = torch.randint(N_ORIENTATIONS, (len(images),), generator=generator, device=draw).to(images.device)
    # Every orientation of the whole batch, picked per image with where: selecting the chosen rows
    # instead would ask the GPU how many there are, a wait for the host at each step.
    out = images
    for orientation in range(1, N_ORIENTATIONS):
        chosen = (choice == orientation)[:, None, None, None]
        out = torch.where(chosen, dihedral(images, orientation), out)
    return out
