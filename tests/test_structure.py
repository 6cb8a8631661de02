"""Embedding-space structure and retrieval figures' helpers: cluster-vs-truth table, choice of k by
silhouette, top-k neighbours, and the clipping of sizes on tiny sets."""

import logging

import numpy as np
import pytest

from astroclip_pipeline.evaluate.retrieval_figures import top_k_neighbours
from astroclip_pipeline.evaluate.structure import (
    choose_k,
    clipped,
    cluster_truth_table,
    dbscan_labels,
    silhouette_scan,
)


def test_cluster_truth_table_against_hand_computed_values():
    # 10 objects, 4 flagged (indices 0, 1, 2, 9). Cluster 0 = {0,1,2,3}: 3 of its 4 members
    # flagged; cluster 1 = {4,5,6}: none; noise = {7,8,9}: one.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, -1])
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    table = cluster_truth_table(labels, truth).set_index("cluster")
    assert list(table.index) == [-1, 0, 1]
    best = table.loc[0]
    assert best.n_members == 4 and best.n_flagged == 3
    assert best.precision == pytest.approx(3 / 4)
    assert best.recall == pytest.approx(3 / 4)
    assert best.f1 == pytest.approx(0.75)
    assert best.chance_precision == pytest.approx(0.4)  # base rate 4 / 10
    assert best.chance_recall == pytest.approx(0.4)  # a random set of 4 of 10 objects
    assert best.lift == pytest.approx(0.75 / 0.4)
    assert table.loc[1].precision == 0 and table.loc[1].recall == 0 and table.loc[1].f1 == 0
    assert table.loc[-1].recall == pytest.approx(1 / 4)
    # noise is never the best match, even where it would score higher
    assert table.best_match.tolist() == [False, True, False]


def test_cluster_truth_table_noise_only_and_no_flags():
    table = cluster_truth_table(np.array([-1, -1, -1]), np.array([True, False, False]))
    assert not table.best_match.any()
    table = cluster_truth_table(np.array([0, 0, 1]), np.zeros(3, dtype=bool))
    assert not table.best_match.any() and table.recall.isna().all()


def test_silhouette_picks_the_number_of_well_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + 0.3 * rng.standard_normal((25, 2)) for c in centres])
    scan = silhouette_scan(points, k_min=2, k_max=7, seed=0)
    assert scan.k.tolist() == list(range(2, 8))
    assert choose_k(scan) == 4 and scan.chosen.sum() == 1 and scan.k[scan.chosen].item() == 4


def test_silhouette_range_is_clipped_to_the_number_of_objects(caplog):
    points = np.random.default_rng(1).standard_normal((6, 3))
    with caplog.at_level(logging.INFO):
        scan = silhouette_scan(points, k_min=2, k_max=15, seed=0)
    assert scan.k.max() == 5  # k <= n - 1
    assert "structure.kmeans.k_max = 15 clipped to 5" in caplog.text


def test_clipped_logs_only_when_it_changes_the_value(caplog):
    with caplog.at_level(logging.INFO):
        assert clipped("x", 5, 1, 10) == 5
        assert caplog.text == ""
        assert clipped("x", 50, 1, 10) == 10
    assert "x = 50 clipped to 10" in caplog.text


def test_top_k_neighbours_hand_made_case():
    # Unit vectors at angles 0, 10, 30, 90 and 180 degrees.
    angles = np.deg2rad([0, 10, 30, 90, 180])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    indices, similarities = top_k_neighbours(vectors[:2], vectors, k=3)
    assert indices.tolist() == [[0, 1, 2], [1, 0, 2]]
    assert similarities[0] == pytest.approx(np.cos(np.deg2rad([0, 10, 30])))
    # leaving each query out of its own candidates
    indices, similarities = top_k_neighbours(vectors[:2], vectors, k=2, exclude=np.array([0, 1]))
    assert indices.tolist() == [[1, 2], [0, 2]]
    assert similarities[1] == pytest.approx(np.cos(np.deg2rad([10, 20])))
    # k beyond the candidates left is cut, not an error
    assert top_k_neighbours(vectors[:1], vectors, k=10, exclude=np.array([0]))[0].shape == (1, 4)


def test_dbscan_separates_two_dense_groups_from_an_outlier():
    square = np.array([[0.0, 0.0], [0.05, 0.0], [0.0, 0.05], [0.05, 0.05], [0.02, 0.02]])
    xy = np.concatenate([square, square + 5.0, [[20.0, 20.0]]])
    labels = dbscan_labels(xy, eps=0.2, min_samples=3)
    assert len(set(labels[:5])) == 1 and len(set(labels[5:10])) == 1 and labels[0] != labels[5]
    assert labels[10] == -1
