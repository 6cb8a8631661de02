"""The image-backbone comparison table (evaluate/encoder_comparison.py)."""

import h5py
import numpy as np
import pytest
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from astroclip_pipeline.evaluate.encoder_comparison import compare_image_encoders
from astroclip_pipeline.evaluate.knn import reference_query_split
from astroclip_pipeline.models.image_encoder import encode_images, load_image_encoder, write_random_vit

TINY_VIT = {"architecture": "vit", "preset": "laptop", "crop": 24, "vit": {"embed_dim": 16, "depth": 1, "n_heads": 2}}


def _embedding_file(path, dataset, rng, order=slice(None)):
    """An embedding file of the embed rule's layout with random unit image embeddings."""
    with h5py.File(dataset) as data:
        targetid = data["TARGETID"][()][order]
    vectors = rng.normal(size=(len(targetid), 8))
    with h5py.File(path, "w") as h5:
        h5["TARGETID"] = targetid
        h5["image_embedding"] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        h5["spectrum_embedding"] = h5["image_embedding"][()]
    return path


def test_rows_are_each_backbone_before_and_after_alignment_on_the_same_halves(tiny_dataset, tmp_path):
    rng = np.random.default_rng(0)
    datasets = [tiny_dataset["val"], tiny_dataset["test"]]
    backbones = {}
    for i, label in enumerate(("ViT/DINO", "ViT, random weights")):
        encoder = write_random_vit(tmp_path / f"encoder{i}.ckpt", TINY_VIT, seed=i)
        assert encoder.feature_dim == 16
        embeddings = [_embedding_file(tmp_path / f"{i}_{p.stem}.h5", p, rng) for p in datasets]
        backbones[label] = (tmp_path / f"encoder{i}.ckpt", embeddings)

    table = compare_image_encoders(backbones, datasets, k=4, seed=3)
    assert list(zip(table.backbone, table.features, strict=True)) == [
        ("ViT/DINO", "before alignment"), ("ViT/DINO", "after alignment"),
        ("ViT, random weights", "before alignment"), ("ViT, random weights", "after alignment"),
        ("g, r, z magnitudes", "catalogue photometry"),
    ]  # fmt: skip
    assert table.dimensions.tolist() == [16, 8, 16, 8, 3]
    assert {"R2 Z_HP", "R2 LOGMSTAR", "R2 Z_MW"} <= set(table.columns)

    # recomputed by hand: the same halves, sklearn's distance-weighted k-NN
    truth, images = [], []
    for path in datasets:
        with h5py.File(path) as h5:
            truth.append(h5["LOGMSTAR"][()])
            images.append(h5["image"][()])
    y = np.concatenate(truth)
    reference, query = reference_query_split(len(y), 3)
    features = encode_images(load_image_encoder(tmp_path / "encoder1.ckpt"), np.concatenate(images)).numpy()
    scaler = StandardScaler().fit(features[reference])
    knn = KNeighborsRegressor(n_neighbors=4, weights="distance")
    knn.fit(scaler.transform(features[reference]), y[reference])
    expected = r2_score(y[query], knn.predict(scaler.transform(features[query])))
    row = table[(table.backbone == "ViT, random weights") & (table.features == "before alignment")]
    assert row["R2 LOGMSTAR"].item() == pytest.approx(expected)

    with h5py.File(backbones["ViT/DINO"][1][0]) as h5:
        embedding = np.concatenate(
            [h5["image_embedding"][()], h5py.File(backbones["ViT/DINO"][1][1])["image_embedding"][()]]
        )
    knn = KNeighborsRegressor(n_neighbors=4, weights="distance").fit(embedding[reference], y[reference])
    row = table[(table.backbone == "ViT/DINO") & (table.features == "after alignment")]
    assert row["R2 LOGMSTAR"].item() == pytest.approx(r2_score(y[query], knn.predict(embedding[query])))


def test_embeddings_of_other_galaxies_are_refused_by_name(tiny_dataset, tmp_path):
    rng = np.random.default_rng(1)
    datasets = [tiny_dataset["val"], tiny_dataset["test"]]
    write_random_vit(tmp_path / "encoder.ckpt", TINY_VIT, seed=0)
    shuffled = [_embedding_file(tmp_path / "val.h5", datasets[0], rng, order=slice(None, None, -1))]
    shuffled.append(_embedding_file(tmp_path / "test.h5", datasets[1], rng))
    with pytest.raises(ValueError, match=r"'ViT/DINO' hold other galaxies, or another order"):
        compare_image_encoders({"ViT/DINO": (tmp_path / "encoder.ckpt", shuffled)}, datasets, k=4, seed=0)
