"""Zero-shot and few-shot prediction of galaxy properties from the embeddings (paper Table 1).

All methods predict the same query galaxies: the held-out galaxies (the validation and test splits,
which alignment never trained on) are split once into a reference half, whose properties are known,
and a query half, whose properties are predicted. The v1 protocol's references are the reference
half; the v2 protocol's are the training split, as in the official code (below):

- k-NN (zero-shot): distance-weighted mean over the k nearest reference galaxies; image->image,
  spectrum->spectrum, and cross-modal (spectrum embeddings as the reference, image embeddings as
  the queries: a galaxy's spectrum-like neighbours found from its picture).
- MLP (few-shot): a small network trained on the reference half, from the embeddings or from the
  g, r, z magnitudes (the photometric baseline).
- The frozen backbones' features before alignment (``backbone_features``) + k-NN, to show what
  alignment adds.
- The supervised baselines (``train/supervised.py``: ResNet18 on images, Conv+Att on spectra),
  trained on the training split and predicting the same query half; their predictions are
  written by their own rule and join the R² table here (protocol "supervised").

Two protocols, chosen in config (``evaluation.protocols``), each row saying which:

- v1 (Lanusse/Parker et al. 2023): k = 16 on the L2-normalised embeddings as they are; the MLP
  is scikit-learn's (128, 128) with early stopping.
- v2 (Parker et al. 2024, the official ``downstream_tasks/property_estimation``): references and
  MLP training set the training split's galaxies; every feature
  set standardised (StandardScaler on the references), k = 64, distance weights; the targets are
  z-scored in the official code, which leaves a distance-weighted mean unchanged, so k-NN needs no
  step for it; the few-shot MLP has hidden layers [64, 64] ([32] for image -> redshift), ReLU,
  Adam 1e-3, batch 64, 10 epochs, MSE on z-scored targets. scikit-learn's MLP has no dropout (the
  official 0.1); its default L2 penalty stands in.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
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

#: The supervised baselines by their short names (train/supervised.py, file names) and their rows.
SUPERVISED = {
    "resnet18": "ResNet18 (supervised, images)",
    "conv_att": "Conv+Att (supervised, spectra)",
}

PROTOCOLS = ("v1", "v2")
V2_SUFFIX = " (v2 protocol)"
#: The four physical properties whose mean R² is the v2 table's "properties" column.
PHYSICAL_PROPERTIES = ("LOGMSTAR", "SSFR", "AGE", "Z_MW")
#: The v2 headline table (official README, DESI): (redshift R², mean R² of the four properties).
PUBLISHED_V2 = {
    "image embedding + k-NN": (0.79, 0.47),
    "image backbone before alignment + k-NN": (0.63, 0.37),
    "spectrum embedding + k-NN": (0.99, 0.63),
    "spectrum transformer before alignment + k-NN": (0.99, 0.64),
    "photometry + MLP": (0.68, 0.42),
    SUPERVISED["resnet18"]: (0.77, 0.43),
    SUPERVISED["conv_att"]: (0.99, 0.60),
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


def _mlp_v2(seed: int, image_redshift: bool):
    network = MLPRegressor(
        hidden_layer_sizes=(32,) if image_redshift else (64, 64),
        learning_rate_init=1e-3,
        batch_size=64,
        max_iter=10,  # epochs
        random_state=seed,
    )
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), network), transformer=StandardScaler())


def _features(embeddings: dict[str, np.ndarray], backbone: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature sets the methods read, by name, row-aligned with ``embeddings["TARGETID"]``."""
    if not np.array_equal(embeddings["TARGETID"], backbone["TARGETID"]):
        raise ValueError("the embedding files and the backbone features hold different galaxies or orders")
    return {
        "image": embeddings["image_embedding"],
        "spectrum": embeddings["spectrum_embedding"],
        "photometry": np.stack([embeddings[m] for m in MAGNITUDES], axis=1),
        "image backbone": backbone["image"],
        "spectrum backbone": backbone["spectrum"],
    }


#: Each method: (reference feature set, query feature set, regressor). k-NN on the L2-normalised
#: embeddings needs no rescaling; the backbones' raw features do (see knn.knn_predict).
METHODS = {
    KNN_MODES["image"]: ("image", "image", "knn"),
    KNN_MODES["spectrum"]: ("spectrum", "spectrum", "knn"),
    KNN_MODES["cross"]: ("spectrum", "image", "knn"),
    "photometry + MLP": ("photometry", "photometry", "mlp"),
    "image embedding + MLP": ("image", "image", "mlp"),
    "spectrum embedding + MLP": ("spectrum", "spectrum", "mlp"),
    "image backbone before alignment + k-NN": ("image backbone", "image backbone", "knn-standardised"),
    "spectrum transformer before alignment + k-NN": ("spectrum backbone", "spectrum backbone", "knn-standardised"),
    "image backbone before alignment + MLP": ("image backbone", "image backbone", "mlp"),
}


def predict_properties(
    embeddings: dict[str, np.ndarray],
    backbone: dict[str, np.ndarray],
    k: int = 16,
    seed: int = 0,
    protocols: Sequence[str] = ("v1",),
    k_v2: int = 64,
    training: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Long table of predictions: method, target, TARGETID, true, predicted (query half only).

    ``embeddings`` and ``backbone`` are the held-out galaxies' (``held_out``, the backbone-features
    file). Each protocol of ``protocols`` ("v1", "v2") gives its rows; v2's method names end in
    ``V2_SUFFIX``. ``k`` is v1's number of neighbours, ``k_v2`` v2's. v1 takes its references
    (k-NN) and training set (MLP) from the held-out reference half, as the Cambridge reproduction
    does. v2 takes them from ``training``, the (embeddings, backbone) of the training split, when
    given: the official code fits its k-NN and few-shot MLP on the training split's galaxies
    (``downstream_tasks/property_estimation``: ``zero_shot(X_train, y_train, X_test)``; the encoders
    saw them, their properties never), which gives k-NN many more references. Both predict the
    same query half.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"config key 'evaluation.protocols': unknown {sorted(unknown)}, expected some of {PROTOCOLS}")
    held = _features(embeddings, backbone)
    reference, query = reference_query_split(len(embeddings["TARGETID"]), seed)
    # (features, properties, rows) of the references of each protocol
    references = {"v1": (held, embeddings, reference)}
    if training is not None:
        references["v2"] = (_features(*training), training[0], np.arange(len(training[0]["TARGETID"])))
    else:
        references["v2"] = references["v1"]
    for protocol, neighbours, key in (
        ("v1", k, "evaluation.knn_neighbours"),
        ("v2", k_v2, "evaluation.v2_knn_neighbours"),
    ):
        if protocol not in protocols:
            continue
        if protocol == "v2" and training is not None:
            n_training = len(training[0]["TARGETID"])
            if k_v2 > n_training:
                raise ValueError(
                    f"config key '{key}': k = {k_v2} is larger than the {n_training} training galaxies, the "
                    f"v2 protocol's references. Set it to at most {n_training}, or train on more galaxies "
                    "(dataset.split, or a larger survey)."
                )
        else:
            require_references(neighbours, len(embeddings["TARGETID"]), "the embedding files", key)
    targets = [t for t in TARGETS if t in embeddings]
    runs = []
    if "v1" in protocols:
        runs += [("v1", method, *spec, k) for method, spec in METHODS.items()]
    if "v2" in protocols:
        # Every feature set standardised, and v2's own MLP.
        for method, (reference_set, query_set, regressor) in METHODS.items():
            regressor = "mlp-v2" if regressor == "mlp" else "knn-standardised"
            runs.append(("v2", method + V2_SUFFIX, reference_set, query_set, regressor, k_v2))
    frames = []
    for protocol, method, reference_set, query_set, regressor, neighbours in tqdm(runs, desc="property prediction"):
        features, properties, rows = references[protocol]
        for target in targets:
            y_reference, y = properties[target].astype(float), embeddings[target].astype(float)
            ref, qry = rows[np.isfinite(y_reference[rows])], query[np.isfinite(y[query])]
            x_reference, x_query = features[reference_set][ref], held[query_set][qry]
            if regressor.startswith("mlp"):
                image_redshift = target == "Z_HP" and method.startswith("image embedding")
                model = _mlp(seed) if regressor == "mlp" else _mlp_v2(seed, image_redshift)
                with warnings.catch_warnings():  # v2 stops after 10 epochs by design, converged or not
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    predicted = model.fit(x_reference, y_reference[ref]).predict(x_query)
            else:
                standardise = regressor == "knn-standardised"
                predicted = knn_predict(x_reference, y_reference[ref], x_query, neighbours, standardise)
            frames.append(pd.DataFrame({
                "method": method, "target": target, "TARGETID": embeddings["TARGETID"][qry],
                "true": y[qry], "predicted": predicted,
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def protocol_of(method: str) -> str:
    """The protocol a row of the R² table follows: "supervised", "v2" or "v1"."""
    if method in SUPERVISED.values():
        return "supervised"
    return "v2" if method.endswith(V2_SUFFIX) else "v1"


def r2_table(predictions: pd.DataFrame, source: str) -> pd.DataFrame:
    """R² per method (rows) and target (columns), with the published values beside ours."""
    scores = predictions.groupby(["method", "target"], sort=False).apply(
        lambda g: r2_score(g["true"], g["predicted"]), include_groups=False
    )
    table = scores.unstack("target").reindex(predictions["method"].unique())
    table = table[[t for t in TARGETS if t in table.columns]].add_prefix("R2 ")
    physical = [f"R2 {t}" for t in PHYSICAL_PROPERTIES]
    if set(physical) <= set(table.columns):
        table["R2 properties (mean of 4)"] = table[physical].mean(axis=1)
    table.insert(0, "protocol", [protocol_of(m) for m in table.index])
    note = "" if source != "mock" else " (different data: DESI, not the mock survey)"
    for name, column in (("paper", "AstroCLIP v1"), ("reproduction", "Cambridge reproduction")):
        for i, target in enumerate(("Z_HP", "LOGMSTAR")):
            table[f"{column} R2 {target}{note}"] = [
                PUBLISHED.get(m, {}).get(name, (np.nan, np.nan))[i] for m in table.index
            ]
    for i, column in enumerate(("Z_HP", "properties (mean of 4)")):
        table[f"AstroCLIP v2 R2 {column}{note}"] = [
            PUBLISHED_V2.get(m.removesuffix(V2_SUFFIX), (np.nan, np.nan))[i] if protocol_of(m) != "v1" else np.nan
            for m in table.index
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


def write_predictions(
    embedding_paths, backbone_path, output, k: int, seed: int, protocols: Sequence[str] = ("v1",), k_v2: int = 64,
    training_embedding_path=None, training_backbone_path=None,
) -> None:  # fmt: skip
    """``predict_properties`` on the held-out embedding files and backbone features; the training
    split's (both paths or neither) are the v2 protocol's references."""
    embeddings = held_out(embedding_paths)
    where = ", ".join(map(str, embedding_paths))
    if "v1" in protocols:
        require_references(k, len(embeddings["TARGETID"]), where)
    training = None
    if training_embedding_path is not None:
        training = (held_out([training_embedding_path]), _read_backbone(training_backbone_path))
    predictions = predict_properties(embeddings, _read_backbone(backbone_path), k, seed, protocols, k_v2, training)
    with atomic_path(output) as tmp:
        predictions.to_parquet(tmp, index=False)


def _read_backbone(path) -> dict[str, np.ndarray]:
    with open_hdf5(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def write_r2_table(predictions_path, output, source: str, baseline_paths: Sequence[str | Path] = ()) -> None:
    """The R² table of the property predictions and, below them, of the supervised baselines' (if any)."""
    predictions = pd.concat([pd.read_parquet(p) for p in (predictions_path, *baseline_paths)], ignore_index=True)
    with atomic_path(output) as tmp:
        r2_table(predictions, source).to_csv(tmp, index=False, float_format="%.3f")


def write_photoz_table(predictions_path, output) -> None:
    with atomic_path(output) as tmp:
        photoz_metrics(pd.read_parquet(predictions_path)).to_csv(tmp, index=False, float_format="%.4f")
