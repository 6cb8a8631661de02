"""Property-prediction metrics against hand-computed values, and the prediction table's layout."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from astroclip_pipeline.evaluate.knn import knn_predict, reference_query_split
from astroclip_pipeline.evaluate.property_prediction import (
    KNN_MODES,
    V2_SUFFIX,
    photoz_metrics,
    predict_properties,
    r2_table,
    redshift_scores,
)


def test_redshift_scores_by_hand():
    z_true = np.array([0.1, 0.2, 0.3, 0.4])
    z_pred = np.array([0.1, 0.25, 0.2, 0.9])
    # Δz = 0, 0.05, -0.1, 0.5; Δz/(1+z) = 0, 0.041667, -0.076923, 0.357143
    scores = redshift_scores(z_true, z_pred)
    assert scores["bias"] == pytest.approx((0 + 0.05 / 1.2) / 2)
    # median Δz = 0.025; |Δz - 0.025|/(1+z) = 0.022727, 0.020833, 0.096154, 0.339286
    assert scores["sigma_nmad"] == pytest.approx(1.48 * (0.025 / 1.1 + 0.125 / 1.3) / 2)
    assert scores["outlier_fraction"] == 0.25  # only 0.5 / 1.4 exceeds 0.15
    # R² = 1 - SS_res / SS_tot = 1 - (0.0025 + 0.01 + 0.25) / 0.05
    assert scores["R2"] == pytest.approx(1 - 0.2625 / 0.05)


def test_r2_table_layout_and_values():
    predictions = pd.DataFrame({
        "method": [KNN_MODES["spectrum"]] * 3 + ["something else"] * 3,
        "target": ["Z_HP"] * 6,
        "TARGETID": [1, 2, 3] * 2,
        "true": [1.0, 2.0, 3.0] * 2,
        "predicted": [1.0, 2.0, 4.0, 2.0, 2.0, 2.0],
    })  # fmt: skip
    table = r2_table(predictions, source="mock").set_index("method")
    assert table.loc[KNN_MODES["spectrum"], "R2 Z_HP"] == pytest.approx(0.5)  # 1 - 1/2
    assert table.loc["something else", "R2 Z_HP"] == pytest.approx(0.0)  # the mean predicts nothing
    paper = "AstroCLIP v1 R2 Z_HP (different data: DESI, not the mock survey)"
    assert table.loc[KNN_MODES["spectrum"], paper] == 0.97 and np.isnan(table.loc["something else", paper])
    assert "AstroCLIP v1 R2 LOGMSTAR" in r2_table(predictions, source="desi-edr").columns
    metrics = photoz_metrics(predictions).set_index("method")
    assert metrics.loc[KNN_MODES["spectrum"], "n"] == 3


def test_predictions_follow_the_information_in_each_embedding():
    rng = np.random.default_rng(1)
    n = 400
    z = rng.uniform(0.05, 0.5, n)
    mass = rng.normal(10.5, 0.4, n)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    knows_z = unit(np.stack([np.cos(3 * z), np.sin(3 * z), 0.01 * rng.normal(size=n)], axis=1))
    noise = unit(rng.normal(size=(n, 3)))
    embeddings = {
        "TARGETID": np.arange(n), "Z_HP": z, "LOGMSTAR": mass, "image_embedding": noise,
        "spectrum_embedding": knows_z, "MAG_G": 20 - mass, "MAG_R": 19.5 - mass, "MAG_Z": 19 - mass,
    }  # fmt: skip
    backbone = {"TARGETID": np.arange(n), "image": noise, "spectrum": knows_z}
    predictions = predict_properties(embeddings, backbone, k=16, seed=0)
    table = r2_table(predictions, source="mock").set_index("method")
    assert table.loc[KNN_MODES["spectrum"], "R2 Z_HP"] > 0.95
    assert table.loc[KNN_MODES["image"], "R2 Z_HP"] < 0.2
    assert table.loc["photometry + MLP", "R2 LOGMSTAR"] > 0.9  # magnitudes here are mass plus a constant
    assert set(predictions.groupby("method").size()) == {2 * (n - n // 2)}  # every query, both targets
    with pytest.raises(ValueError, match="different galaxies"):
        predict_properties(embeddings, {**backbone, "TARGETID": np.arange(n)[::-1]})


def test_v2_protocol_rows_standardise_and_say_which_protocol():
    """v2 standardises every feature: an informative feature of small scale then counts as much as a
    noisy one of large scale, which decides v1's neighbours alone. Rows name their protocol."""
    rng = np.random.default_rng(2)
    n = 200
    z = rng.uniform(0.05, 0.5, n)
    properties = {t: rng.normal(size=n) for t in ("LOGMSTAR", "SSFR", "AGE", "Z_MW")}
    features = np.stack([0.01 * z, rng.normal(size=n)], axis=1)  # z in a tiny feature, noise in a large one
    embeddings = {
        "TARGETID": np.arange(n), "Z_HP": z, **properties, "image_embedding": features,
        "spectrum_embedding": features, "MAG_G": np.zeros(n), "MAG_R": np.zeros(n), "MAG_Z": np.zeros(n),
    }  # fmt: skip
    backbone = {"TARGETID": np.arange(n), "image": features, "spectrum": features}
    predictions = predict_properties(embeddings, backbone, seed=0, protocols=("v2",), k_v2=32)
    table = r2_table(predictions, source="mock").set_index("method")
    v2 = KNN_MODES["spectrum"] + V2_SUFFIX
    assert set(table.protocol) == {"v2"} and table.index.str.endswith(V2_SUFFIX).all()
    assert table.loc[v2, "R2 Z_HP"] > 0.8
    # v1's k-NN on the same features, as they are: the noisy feature picks the neighbours.
    reference, query = reference_query_split(n, 0)
    v1 = knn_predict(features[reference], z[reference], features[query], 16, standardise=False)
    assert r2_score(z[query], v1) < 0.3
    mean = table.loc[v2, [f"R2 {t}" for t in properties]].mean()
    np.testing.assert_allclose(table.loc[v2, "R2 properties (mean of 4)"], mean)
    published = "AstroCLIP v2 R2 Z_HP (different data: DESI, not the mock survey)"
    assert table.loc[v2, published] == 0.99
    with pytest.raises(ValueError, match="evaluation.v2_knn_neighbours"):
        predict_properties(embeddings, backbone, protocols=("v2",), k_v2=n)


def test_v2_references_are_the_training_split_when_given():
    """The official v2 code fits its k-NN on the training split's embeddings (zero_shot(X_train,
    y_train, X_test)); v1 keeps the held-out reference half. Both predict the same queries."""
    rng = np.random.default_rng(3)

    def galaxies(n, first_id):
        z = rng.uniform(0.05, 0.5, n)
        features = np.stack([np.cos(3 * z), np.sin(3 * z)], axis=1) + 0.01 * rng.normal(size=(n, 2))
        embeddings = {
            "TARGETID": np.arange(first_id, first_id + n), "Z_HP": z, "image_embedding": features,
            "spectrum_embedding": features, "MAG_G": z, "MAG_R": z, "MAG_Z": z,
        }  # fmt: skip
        return embeddings, {"TARGETID": embeddings["TARGETID"], "image": features, "spectrum": features}

    held, held_backbone = galaxies(100, 0)
    training = galaxies(300, 1000)
    predictions = predict_properties(held, held_backbone, k=16, seed=0, protocols=("v1", "v2"), k_v2=64,
                                     training=training)  # fmt: skip
    reference, query = reference_query_split(100, 0)
    v2 = predictions[predictions.method == KNN_MODES["spectrum"] + V2_SUFFIX]
    np.testing.assert_array_equal(v2.TARGETID, held["TARGETID"][query])
    expected = knn_predict(training[0]["spectrum_embedding"], training[0]["Z_HP"],
                           held["spectrum_embedding"][query], 64, standardise=True)  # fmt: skip
    np.testing.assert_allclose(v2.predicted, expected)  # 64 neighbours: more than the 50 held-out references
    v1 = predictions[predictions.method == KNN_MODES["spectrum"]]
    np.testing.assert_array_equal(v1.TARGETID, v2.TARGETID)
    with pytest.raises(ValueError, match="300 training galaxies"):
        predict_properties(held, held_backbone, protocols=("v2",), k_v2=301, training=training)
