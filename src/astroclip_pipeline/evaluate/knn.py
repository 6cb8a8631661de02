"""Zero-shot property prediction by k-nearest-neighbour regression on learned features.

The papers' protocol: the held-out galaxies are split into a reference half, whose properties are
known, and a query half, whose properties are predicted as the distance-weighted mean over the k
nearest reference galaxies in feature space; the score is the coefficient of determination R².
Nothing is trained, so the score measures what the features already know.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler


def reference_query_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random halves of ``n`` objects: (reference indices, query indices)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def require_references(k: int, n_objects: int, where: str, key: str = "evaluation.knn_neighbours") -> None:
    """Stop unless the reference half of ``n_objects`` held-out objects (``where``) holds ``k`` of them.

    Raises:
        ValueError: naming the config key ``key`` that set k, the counts and the fix.
    """
    n_reference = n_objects // 2
    if k > n_reference:
        raise ValueError(
            f"config key '{key}': k = {k} is larger than the {n_reference} reference "
            f"galaxies (half of the {n_objects} held-out galaxies of {where}). Set it to at most "
            f"{n_reference}, or hold out more galaxies (dataset.split, or a larger survey)."
        )


def knn_predict(
    reference: np.ndarray, targets: np.ndarray, query: np.ndarray, k: int = 16, standardise: bool = True
) -> np.ndarray:
    """Distance-weighted k-NN prediction of ``targets`` (n_ref,) or (n_ref, n_targets) at ``query``.

    ``standardise`` rescales every feature to unit variance over the reference set first: the
    pooled features of a CNN differ in scale by orders of magnitude from channel to channel, and
    without it a few channels would decide the neighbours. (L2-normalised embeddings need not.)
    """
    if len(reference) < k:
        raise ValueError(f"k-NN with k={k} needs at least {k} reference objects, got {len(reference)}")
    if standardise:
        scaler = StandardScaler().fit(reference)
        reference, query = scaler.transform(reference), scaler.transform(query)
    model = KNeighborsRegressor(n_neighbors=k, weights="distance").fit(reference, targets)
    return model.predict(query)


def knn_r2_table(
    features: dict[str, np.ndarray], properties: pd.DataFrame, k: int = 16, seed: int = 0, standardise: bool = True
) -> pd.DataFrame:
    """R² of k-NN regression for every feature set (rows) and property (columns), on the same halves.

    Objects with a non-finite property are left out of that property's score (PROVABGS marks
    failed fits with -999, already cut; a NaN here would be a bug upstream, so it is counted).
    """
    n = len(properties)
    require_references(k, n, "the property table")
    reference, query = reference_query_split(n, seed)
    rows = []
    for name, x in features.items():
        if len(x) != n:
            raise ValueError(f"features {name!r} have {len(x)} rows for {n} objects")
        row = {"features": name}
        for column in properties.columns:
            y = properties[column].to_numpy(dtype=float)
            ref = reference[np.isfinite(y[reference])]
            qry = query[np.isfinite(y[query])]
            prediction = knn_predict(x[ref], y[ref], x[qry], k, standardise)
            row[column] = r2_score(y[qry], prediction)
        rows.append(row)
    return pd.DataFrame(rows)
