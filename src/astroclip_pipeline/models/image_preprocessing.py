"""What a cutout looks like to the image encoder: Stein et al.'s (2021) "ToRGB" scaling.

Found in georgestein/ssl-legacysurvey (ssl_legacysurvey/data_loaders/decals_augmentations.py,
class ToRGB, and data_loaders/decals_dataloader.py): the published MoCo v2 ResNet-50 was trained
on grz cutouts in nanomaggies mapped as follows, with no mean/std normalisation afterwards:

- output channels in the order z, r, g, with scales 2.2, 3.4, 6.0 (the viewer's per-band scales);
- I = mean over bands of max(0, x * scale + m), m = 0.03; fI = asinh(Q I) / sqrt(Q), Q = 20;
- out = x * (scale + m * fI / I), clipped to [0, 1].

This differs from the Legacy Survey viewer's mapping ((x * scale + m) * fI / I, see
``evaluate/rgb.py``), so we keep both: the viewer's for pictures, Stein's for the network. Their
validation transform crops the centre 96 of 152 pixels first, then applies ToRGB.

AstroDINO (AstroCLIP v2's ViT, PolymathicAI/AstroCLIP ``astrodino/data/augmentations.py``, class
ToRGB) was trained on the viewer's mapping instead: ``viewer_rgb``, the batched torch form of
``evaluate.rgb.legacysurvey_rgb`` (the same constants), so it runs on the training device.
"""

import torch

from ..evaluate.rgb import VIEWER_GRZ, VIEWER_OFFSET, VIEWER_Q

#: (scale, input band index) of each output channel: z, r, g.
_CHANNELS = ((2.2, 2), (3.4, 1), (6.0, 0))
_M = 0.03
_Q = 20.0


def constant_like(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """A 1-d tensor of ``values`` with ``like``'s dtype and device, made there by fills: on a GPU,
    ``torch.tensor(values, device=...)`` copies from host memory, which waits for the GPU first."""
    return torch.stack([like.new_full((), value) for value in values])


def stein_rgb(images: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) g, r, z cutouts in nanomaggies -> (batch, 3, H, W) z, r, g in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected grz images of shape (batch, 3, H, W), got {tuple(images.shape)}")
    scales = constant_like([scale for scale, _ in _CHANNELS], images)[None, :, None, None]
    x = torch.stack([images[:, band] for _, band in _CHANNELS], dim=1)
    intensity = torch.clamp(x * scales + _M, min=0.0).mean(dim=1, keepdim=True)
    stretch = torch.asinh(_Q * intensity) / _Q**0.5
    intensity = intensity + (intensity == 0) * 1e-6
    return torch.clamp(x * (scales + _M * stretch / intensity), 0.0, 1.0)


def viewer_rgb(images: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) g, r, z cutouts in nanomaggies -> (batch, 3, H, W) RGB in [0, 1], as the
    Legacy Survey viewer draws them: planes (z, r, g) = x * scale + m, times asinh(Q I) / sqrt(Q) / I."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected grz images of shape (batch, 3, H, W), got {tuple(images.shape)}")
    planes = sorted("grz", key=lambda band: VIEWER_GRZ[band][0])  # the band drawn in R, G, B: z, r, g
    scales = constant_like([VIEWER_GRZ[band][1] for band in planes], images)[None, :, None, None]
    rgb = torch.stack([images[:, "grz".index(band)] for band in planes], dim=1) * scales + VIEWER_OFFSET
    intensity = rgb.clamp_min(0.0).mean(dim=1, keepdim=True)
    stretch = torch.asinh(VIEWER_Q * intensity) / VIEWER_Q**0.5
    factor = torch.where(intensity > 0, stretch / intensity.clamp_min(1e-12), 0.0)
    return torch.clamp(rgb * factor, 0.0, 1.0)
