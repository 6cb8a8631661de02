"""What a frozen backbone knows before alignment: k-NN R² of its pooled features on held-out galaxies.

Beside the pretrained image backbone the table has two rows that put its numbers in context: the
same network with random weights (what the architecture and the pixel scaling give for free) and
the three catalogue magnitudes (g, r, z), the classical photometric baseline.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..files import atomic_path, open_hdf5
from ..models.image_encoder import encode_images, load_image_encoder, untrained_like
from .knn import knn_r2_table, require_references

PROPERTIES = ("Z_HP", "LOGMSTAR")
MAGNITUDES = ("MAG_G", "MAG_R", "MAG_Z")


def image_backbone_knn(
    encoder_path: str | Path, dataset_path: str | Path, output: str | Path, k: int, seed: int
) -> None:
    with open_hdf5(dataset_path, "r") as h5:
        require_references(k, len(h5["TARGETID"]), str(dataset_path))
    encoder = load_image_encoder(encoder_path)
    torch.manual_seed(seed)
    untrained = untrained_like(encoder)
    with open_hdf5(dataset_path, "r") as h5:
        absent = [c for c in (*PROPERTIES, *MAGNITUDES, "image") if c not in h5]
        if absent:
            raise KeyError(f"{dataset_path}: no dataset(s) {absent}; expected a dataset file of build_dataset")
        properties = pd.DataFrame({c: h5[c][()] for c in PROPERTIES})
        features = {
            "pretrained image backbone": encode_images(encoder, h5["image"]).numpy(),
            "same network, random weights": encode_images(untrained, h5["image"]).numpy(),
            "g, r, z magnitudes": np.stack([h5[c][()] for c in MAGNITUDES], axis=1),
        }
    table = knn_r2_table(features, properties, k=k, seed=seed)
    table.insert(1, "dimensions", [x.shape[1] for x in features.values()])
    table = table.rename(columns={c: f"R2 {c}" for c in PROPERTIES})
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.3f")
