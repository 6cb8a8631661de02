"""The frozen backbones' features of the held-out galaxies, before alignment, for the baselines of
``property_prediction`` (the paper's "image backbone before alignment").

A module of its own so that the rule computing them runs no k-NN or MLP code: a change there
reruns the predictions, not the features (see ``library_code`` in workflow/rules/common.smk).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..files import atomic_path, open_hdf5
from ..models.image_encoder import encode_images, load_image_encoder
from ..models.specformer import load_encoder


@torch.no_grad()
def backbone_features(
    image_encoder_path: str | Path,
    spectrum_encoder_path: str | Path,
    dataset_paths: Sequence[str | Path],
    batch_size=128,
) -> dict[str, np.ndarray]:
    """Frozen features before alignment: pooled image-backbone features and token-mean hidden states."""
    image_encoder = load_image_encoder(image_encoder_path)
    spectrum_encoder = load_encoder(spectrum_encoder_path)
    targetid, image, spectrum = [], [], []
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            targetid.append(h5["TARGETID"][()])
            image.append(encode_images(image_encoder, h5["image"], batch_size).numpy())
            for start in tqdm(range(0, len(h5["TARGETID"]), batch_size), desc=f"spectra of {Path(path).name}"):
                rows = slice(start, start + batch_size)
                flux, ivar = torch.from_numpy(h5["spectrum"][rows]), torch.from_numpy(h5["ivar"][rows])
                hidden, _ = spectrum_encoder(spectrum_encoder.tokens(flux, ivar))
                spectrum.append(hidden.mean(dim=1).numpy())
    return {"TARGETID": np.concatenate(targetid), "image": np.concatenate(image), "spectrum": np.concatenate(spectrum)}


def write_backbone_features(image_encoder_path, spectrum_encoder_path, dataset_paths, output) -> None:
    features = backbone_features(image_encoder_path, spectrum_encoder_path, dataset_paths)
    with atomic_path(output) as tmp, open_hdf5(tmp, "w") as h5:
        for name, values in features.items():
            h5.create_dataset(name, data=values, track_times=False)
