"""grz cutouts as RGB pictures, with the Legacy Survey viewer's mapping."""

import numpy as np

#: Legacy Survey viewer (sdss_rgb-style) mapping for g, r, z: (RGB plane, scale) per band.
VIEWER_GRZ = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}
VIEWER_OFFSET = 0.03
VIEWER_Q = 20.0


def legacysurvey_rgb(image: np.ndarray, bands: str = "grz") -> np.ndarray:
    """(bands, H, W) nanomaggies -> (H, W, 3) RGB in [0, 1] as the Legacy Survey viewer draws it.

    Each band is scaled and offset, the mean intensity I is stretched by asinh(Q I)/sqrt(Q), and
    every plane is multiplied by that stretch over I, which keeps the colours of bright regions.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] != len(bands):
        raise ValueError(f"expected an image of shape ({len(bands)}, H, W) for bands {bands!r}, got {image.shape}")
    rgb = np.zeros((*image.shape[1:], 3))
    for band, plane in zip(bands, image, strict=True):
        index, scale = VIEWER_GRZ[band]
        rgb[..., index] = plane * scale + VIEWER_OFFSET
    intensity = np.maximum(rgb, 0.0).mean(axis=-1)
    stretch = np.arcsinh(VIEWER_Q * intensity) / np.sqrt(VIEWER_Q)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(intensity > 0, stretch / intensity, 0.0)
    return np.clip(rgb * factor[..., None], 0.0, 1.0)
