"""Adaptive moments of the cutouts: the classical shape measurement, a baseline for the learned features.

GalSim's HSM ``FindAdaptiveMom`` (Bernstein & Jarvis 2002; Hirata & Seljak 2003) fits the second
moments of a galaxy under an elliptical Gaussian weight matched to its own light: the axis ratio
and size a galaxy shows through the seeing, as SDSS's and the HSC pipeline's adaptive moments
measure them. Beside the magnitudes they are what a classifier without learned features can know
of a galaxy's shape, so the morphology table shows how much of a question the pixels answer.
"""

from collections.abc import Sequence
from pathlib import Path

import galsim
import numpy as np
from tqdm import tqdm

from ..files import open_hdf5

#: The band measured, as an index into the dataset files' g, r, z image planes.
R_BAND = 1
_CHUNK = 1024


def adaptive_moments(images: np.ndarray) -> np.ndarray:
    """(n, 3) float64 per image of shape (n, H, W): the axis ratio q (0-1, minor / major), the
    natural log of the moments' σ (pixels) and 1 where HSM converged. Where it did not (an empty
    or saturated cutout) q is 1 and log σ the median of the others, so that a classifier can still
    take the row and learn from the flag."""
    out = np.zeros((len(images), 3))
    for i, image in enumerate(images):
        moments = galsim.hsm.FindAdaptiveMom(galsim.Image(np.asarray(image, dtype=np.float64)), strict=False)
        if moments.moments_status == 0 and moments.moments_sigma > 0:
            out[i] = moments.observed_shape.q, np.log(moments.moments_sigma), 1.0
    failed = out[:, 2] == 0
    out[failed, 0] = 1.0
    out[failed, 1] = np.median(out[~failed, 1]) if (~failed).any() else 0.0
    return out


def dataset_moments(dataset_paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """TARGETID (n,) and the r-band ``adaptive_moments`` (n, 3) of every cutout of these dataset
    files, in their order (so row-aligned with the embedding files made from them)."""
    targetid, moments = [], []
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            targetid.append(h5["TARGETID"][()])
            n = len(targetid[-1])
            for start in tqdm(range(0, n, _CHUNK), desc=f"adaptive moments of {Path(path).name}", unit="chunk"):
                moments.append(adaptive_moments(h5["image"][start : start + _CHUNK, R_BAND]))
    return {"TARGETID": np.concatenate(targetid), "moments": np.concatenate(moments)}
