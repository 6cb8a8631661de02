"""Which image backbone serves AstroCLIP best: one k-NN R² table over the same held-out galaxies.

AstroCLIP v2 (Parker et al. 2024) replaced v1's ResNet-50 pretrained by MoCo v2 (Stein et al.
2021) with a ViT pretrained by DINOv2 self-distillation, and credits it with the rise of the image
embedding's redshift R² from 0.71 to 0.79. This table asks the same question of the workflow's own
backbones, each aligned with the same spectrum encoder and the same alignment settings:

- the ViT pretrained by DINO (``pretrain_dino``), the ResNet pretrained by MoCo (``pretrain_images``)
  and the same ViT with random weights (what the architecture and the pixel scaling give for free);
- for each, "before alignment": the backbone's pooled features (CLS token, or the ResNet's pooled
  map) with a standardised k-NN, as ``backbone_knn``; "after alignment": the AstroCLIP image
  embedding with a k-NN on the L2-normalised vectors, as ``property_prediction``;
- the g, r, z magnitudes with the same standardised k-NN, the classical photometric reference.

Every row uses the same reference and query halves of the validation and test galaxies (those the
alignment never trained on) and the same k, so the rows compare.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_path, open_hdf5
from ..models.image_encoder import encode_images, load_image_encoder
from .embeddings import read_embedding_files
from .knn import knn_r2_table, require_references
from .property_prediction import MAGNITUDES, TARGETS


def held_out_properties(dataset_paths: Sequence[str | Path]) -> tuple[np.ndarray, pd.DataFrame]:
    """(TARGETID (n,), a table of n rows: the TARGETS the files hold and the g, r, z magnitudes) of
    the dataset files, concatenated in the order given."""
    targetid, columns = [], []
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            absent = [c for c in ("TARGETID", "image", *MAGNITUDES) if c not in h5]
            if absent:
                raise KeyError(f"{path}: no dataset(s) {absent}; expected a dataset file of build_dataset")
            targetid.append(h5["TARGETID"][()])
            columns.append(pd.DataFrame({c: h5[c][()] for c in (*TARGETS, *MAGNITUDES) if c in h5}))
    return np.concatenate(targetid), pd.concat(columns, ignore_index=True)


def image_backbone_features(encoder_path: str | Path, dataset_paths: Sequence[str | Path]) -> np.ndarray:
    """Pooled features (n, feature_dim) of one frozen image backbone over the dataset files' cutouts
    (``backbone_features.backbone_features`` also runs the spectrum transformer, which this table
    does not need)."""
    encoder = load_image_encoder(encoder_path)
    parts = []
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            parts.append(encode_images(encoder, h5["image"]).numpy())
    return np.concatenate(parts)


def compare_image_encoders(
    backbones: Mapping[str, tuple[str | Path, Sequence[str | Path]]],
    dataset_paths: Sequence[str | Path],
    k: int,
    seed: int,
) -> pd.DataFrame:
    """R² table: a row per (backbone, before / after alignment), then the magnitudes' row.

    ``backbones`` maps a row label (e.g. "ViT/DINO") to (its image-encoder file, the embedding files
    of its aligned AstroCLIP model for ``dataset_paths``, in the same order). Columns: ``backbone``,
    ``features``, ``dimensions``, then ``R2 <property>`` for the TARGETS the dataset files hold.

    Raises:
        ValueError: when an embedding file holds other galaxies, or another order, than the dataset
            files (the rows would not compare), or when k exceeds the reference half.
    """
    targetid, table = held_out_properties(dataset_paths)
    require_references(k, len(targetid), ", ".join(map(str, dataset_paths)))
    properties = table[[c for c in TARGETS if c in table.columns]]
    before, after = {}, {}
    for label, (encoder_path, embedding_paths) in backbones.items():
        embeddings = read_embedding_files(embedding_paths)
        if not np.array_equal(embeddings["TARGETID"], targetid):
            raise ValueError(
                f"the embedding files {list(map(str, embedding_paths))} of {label!r} hold other galaxies, or "
                f"another order, than the dataset files {list(map(str, dataset_paths))}"
            )
        before[label] = image_backbone_features(encoder_path, dataset_paths)
        after[label] = embeddings["image_embedding"]
    before["g, r, z magnitudes"] = table[list(MAGNITUDES)].to_numpy()
    scores = {
        "before alignment": knn_r2_table(before, properties, k, seed, standardise=True).set_index("features"),
        "after alignment": knn_r2_table(after, properties, k, seed, standardise=False).set_index("features"),
    }
    rows = [
        {"backbone": label, "features": stage, "dimensions": features[label].shape[1], **scores[stage].loc[label]}
        for label in backbones
        for stage, features in (("before alignment", before), ("after alignment", after))
    ]
    photometry = "g, r, z magnitudes"
    rows.append({
        "backbone": photometry, "features": "catalogue photometry", "dimensions": len(MAGNITUDES),
        **scores["before alignment"].loc[photometry],
    })  # fmt: skip
    return pd.DataFrame(rows).rename(columns={c: f"R2 {c}" for c in properties.columns})


def write_image_encoder_comparison(
    labels: Sequence[str],
    encoder_paths: Sequence[str | Path],
    embedding_paths: Sequence[Sequence[str | Path]],
    dataset_paths: Sequence[str | Path],
    output: str | Path,
    k: int,
    seed: int,
) -> None:
    backbones = dict(zip(labels, zip(encoder_paths, embedding_paths, strict=True), strict=True))
    table = compare_image_encoders(backbones, dataset_paths, k, seed)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.3f")
