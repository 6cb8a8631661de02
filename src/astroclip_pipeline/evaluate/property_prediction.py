"""Zero-shot and few-shot prediction of galaxy properties from the embeddings (paper Table 1).

All methods use the same held-out galaxies (the validation and test splits, which alignment never
trained on), split once into a reference half, whose properties are known, and a query half,
whose properties are predicted:

- k-NN (zero-shot): distance-weighted mean over the k nearest reference galaxies; image->image,
  spectrum->spectrum, and cross-modal (spectrum embeddings as the reference, image embeddings as
  the queries: a galaxy's spectrum-like neighbours found from its picture).
- MLP (few-shot): a small network trained on the reference half, from the embeddings or from the
  g, r, z magnitudes (the photometric baseline).
- The frozen backbones' features before alignment (``backbone_features``) + k-NN, to show what
  alignment adds.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from ..files import atomic_path, open_hdf5
from .embeddings import read_embeddings
from .knn import knn_predict, reference_query_split, require_references

#: Properties predicted when the catalogue has them (the mock survey has all five).
TARGETS = ("Z_HP", "LOGMSTAR", "SSFR", "AGE", "Z_MW")
MAGNITUDES = ("MAG_G", "MAG_R", "MAG_Z")

#: The zero-shot k-NN modes by their short names (file names, wildcards) and their table names.
KNN_MODES = {
    "image": "image embedding + k-NN",
    "spectrum": "spectrum embedding + k-NN",
    "cross": "cross-modal (spectrum reference, image query) + k-NN",
}

#: Paper Table 1 (AstroCLIP v1, R² on DESI) and the Cambridge reproduction, by our method names.
PUBLISHED = {
    "photometry + MLP": {"paper": (0.69, 0.65)},
    "image embedding + k-NN": {"paper": (0.71, 0.66), "reproduction": (0.65, 0.57)},
    "spectrum embedding + k-NN": {"paper": (0.97, 0.86), "reproduction": (0.87, 0.74)},
    "cross-modal (spectrum reference, image query) + k-NN": {"reproduction": (0.59, 0.50)},
    "image embedding + MLP": {"paper": (0.63, 0.57)},
    "spectrum embedding + MLP": {"paper": (0.99, 0.86)},
    "image backbone before alignment + MLP": {"paper": (0.39, 0.45)},
}


def held_out(embedding_paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """The embedding files' columns, concatenated in the order given."""
    parts = [read_embeddings(p) for p in embedding_paths]
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _mlp(seed: int):
    # Standardised inputs and a small network with early stopping: a few-shot probe, not a model
    # to be tuned; the same for every input so that rows compare.
    # The target is standardised too: metallicities of ~0.02 and ages of ~5 Gyr need the same step sizes.
    network = MLPRegressor(
        hidden_layer_sizes=(128, 128), alpha=1e-3, early_stopping=True, max_iter=500, random_state=seed
    )
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), network), transformer=StandardScaler())


def predict_properties(
    embeddings: dict[str, np.ndarray], backbone: dict[str, np.ndarray], k: int = 16, seed: int = 0
) -> pd.DataFrame:
    """Long table of predictions: method, target, TARGETID, true, predicted (query half only)."""
    if not np.array_equal(embeddings["TARGETID"], backbone["TARGETID"]):
        raise ValueError("the embedding files and the backbone features hold different galaxies or orders")
    require_references(k, len(embeddings["TARGETID"]), "the embedding files")
    targets = [t for t in TARGETS if t in embeddings]
    reference, query = reference_query_split(len(embeddings["TARGETID"]), seed)
    image, spectrum = embeddings["image_embedding"], embeddings["spectrum_embedding"]
    photometry = np.stack([embeddings[m] for m in MAGNITUDES], axis=1)
    # (reference features, query features, regressor): k-NN on L2-normalised embeddings needs no
    # rescaling; the backbones' raw features do (see knn.knn_predict).
    methods = {
        KNN_MODES["image"]: (image, image, "knn"),
        KNN_MODES["spectrum"]: (spectrum, spectrum, "knn"),
        KNN_MODES["cross"]: (spectrum, image, "knn"),
        "photometry + MLP": (photometry, photometry, "mlp"),
        "image embedding + MLP": (image, image, "mlp"),
        "spectrum embedding + MLP": (spectrum, spectrum, "mlp"),
        "image backbone before alignment + k-NN": (backbone["image"], backbone["image"], "knn-standardised"),
        "spectrum transformer before alignment + k-NN": (
            backbone["spectrum"],
            backbone["spectrum"],
            "knn-standardised",
        ),
        "image backbone before alignment + MLP": (backbone["image"], backbone["image"], "mlp"),
    }
    frames = []
    for method, (x_reference, x_query, regressor) in tqdm(methods.items(), desc="property prediction"):
        for target in targets:
            y = embeddings[target].astype(float)
            ref, qry = reference[np.isfinite(y[reference])], query[np.isfinite(y[query])]
            if regressor == "mlp":
                predicted = _mlp(seed).fit(x_reference[ref], y[ref]).predict(x_query[qry])
            else:
                standardise = regressor == "knn-standardised"
                predicted = knn_predict(x_reference[ref], y[ref], x_query[qry], k, standardise)
            frames.append(pd.DataFrame({
                "method": method, "target": target, "TARGETID": embeddings["TARGETID"][qry],
                "true": y[qry], "predicted": predicted,
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def r2_table(predictions: pd.DataFrame, source: str) -> pd.DataFrame:
    """R² per method (rows) and target (columns), with the published values beside ours."""
    scores = predictions.groupby(["method", "target"], sort=False).apply(
        lambda g: r2_score(g["true"], g["predicted"]), include_groups=False
    )
    table = scores.unstack("target").reindex(predictions["method"].unique())
    table = table[[t for t in TARGETS if t in table.columns]].add_prefix("R2 ")
    note = "" if source != "mock" else " (different data: DESI, not the mock survey)"
    for name, column in (("paper", "AstroCLIP v1"), ("reproduction", "Cambridge reproduction")):
        for i, target in enumerate(("Z_HP", "LOGMSTAR")):
            table[f"{column} R2 {target}{note}"] = [
                PUBLISHED.get(m, {}).get(name, (np.nan, np.nan))[i] for m in table.index
            ]
    return table.reset_index()


def photoz_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Redshift quality as photo-z work reports it, for every method that predicts Z_HP."""
    rows = []
    for method, group in predictions[predictions.target == "Z_HP"].groupby("method", sort=False):
        z_true, z_pred = group["true"].to_numpy(), group["predicted"].to_numpy()
        rows.append({"method": method, "n": len(group), **redshift_scores(z_true, z_pred)})
    return pd.DataFrame(rows)


def redshift_scores(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """bias = median(Δz / (1 + z)); σ_NMAD = 1.48 median(|Δz - median Δz| / (1 + z));
    outliers: |Δz| / (1 + z) > 0.15."""
    dz = z_pred - z_true
    scaled = dz / (1 + z_true)
    return {
        "bias": float(np.median(scaled)),
        "sigma_nmad": float(1.48 * np.median(np.abs(dz - np.median(dz)) / (1 + z_true))),
        "outlier_fraction": float(np.mean(np.abs(scaled) > 0.15)),
        "R2": float(r2_score(z_true, z_pred)),
    }


def write_predictions(embedding_paths, backbone_path, output, k: int, seed: int) -> None:
    embeddings = held_out(embedding_paths)
    require_references(k, len(embeddings["TARGETID"]), ", ".join(map(str, embedding_paths)))
    with open_hdf5(backbone_path, "r") as h5:
        backbone = {name: h5[name][()] for name in h5}
    predictions = predict_properties(embeddings, backbone, k, seed)
    with atomic_path(output) as tmp:
        predictions.to_parquet(tmp, index=False)


def write_r2_table(predictions_path, output, source: str) -> None:
    with atomic_path(output) as tmp:
        r2_table(pd.read_parquet(predictions_path), source).to_csv(tmp, index=False, float_format="%.3f")


def write_photoz_table(predictions_path, output) -> None:
    with atomic_path(output) as tmp:
        photoz_metrics(pd.read_parquet(predictions_path)).to_csv(tmp, index=False, float_format="%.4f")
