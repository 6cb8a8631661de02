"""Structure of the embedding space: UMAP projections, DBSCAN and k-means clusters, and how well
clusters recover a known label (the mock survey's imaging-artefact flag).

The reproduction's extension of AstroCLIP: UMAP of the image, spectrum and combined embeddings;
DBSCAN on the 2-D image UMAP, which isolates an island of cutouts with artefacts; k-means on the
128-d spectrum embeddings with k chosen by silhouette.

Every computation runs on the "held-out set": the rows of the chosen embedding files (val, test)
concatenated in order, each row keeping its split and row number so that figures can fetch its
cutout and spectrum from ``results/data/{split}.h5``. The "combined" modality is the concatenation
of the two L2-normalised 128-d embeddings; a Euclidean distance on it orders pairs as the mean of
the two cosine similarities does.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_path, open_hdf5
from .embeddings import concatenate_common, read_embeddings

log = logging.getLogger(__name__)

MODALITIES = ("image", "spectrum", "combined")
#: Columns that tie a row of a structure table back to its embedding and dataset files.
ROW_KEYS = ["TARGETID", "SPLIT", "ROW"]


# --- the held-out set ---------------------------------------------------------------------------


def load_heldout(embedding_paths: Sequence[str | Path], splits: Sequence[str]) -> dict[str, np.ndarray]:
    """The embedding files of ``splits`` concatenated, with SPLIT and ROW (row in its own file)."""
    if len(embedding_paths) != len(splits):
        raise ValueError(f"{len(embedding_paths)} embedding files for {len(splits)} splits {list(splits)}")
    parts = []
    for path, split in zip(embedding_paths, splits, strict=True):
        part = read_embeddings(path)
        n = len(part["TARGETID"])
        part["SPLIT"] = np.full(n, split, dtype=object)
        part["ROW"] = np.arange(n)
        parts.append(part)
    return concatenate_common(parts)


def modality_vectors(embeddings: dict[str, np.ndarray], modality: str) -> np.ndarray:
    """The vectors a modality is analysed on: one embedding, or both side by side ("combined")."""
    if modality == "combined":
        return np.concatenate([embeddings["image_embedding"], embeddings["spectrum_embedding"]], axis=1)
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return embeddings[f"{modality}_embedding"]


def row_keys(embeddings: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({key: embeddings[key] for key in ROW_KEYS})


def check_aligned(table: pd.DataFrame, embeddings: dict[str, np.ndarray], table_path: str | Path) -> None:
    """A structure table must list the held-out rows in the same order as the embeddings."""
    if len(table) != len(embeddings["TARGETID"]) or not np.array_equal(table.TARGETID, embeddings["TARGETID"]):
        raise ValueError(
            f"{table_path}: its TARGETIDs do not match the embedding files row for row; "
            "was it made from other splits (config key structure.splits)?"
        )


def read_dataset_rows(dataset_path: str | Path, rows: Sequence[int], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``keys`` of a dataset file at ``rows`` (any order, repeats allowed), read without loading
    the whole file: h5py wants sorted unique indices, so read those and put them back in order."""
    rows = np.asarray(rows, dtype=int)
    unique, inverse = np.unique(rows, return_inverse=True)
    with open_hdf5(dataset_path, "r") as h5:
        missing = [key for key in keys if key not in h5]
        if missing:
            raise KeyError(f"{dataset_path}: no {missing}; expected a dataset file of the build_dataset rule")
        return {key: h5[key][unique][inverse] for key in keys}


def read_heldout_rows(
    dataset_paths: dict[str, str | Path], splits: np.ndarray, rows: np.ndarray, keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """``keys`` for held-out rows given by (split, row in that split's dataset file), in order."""
    out: dict[str, np.ndarray] = {}
    for split in np.unique(splits):
        where = np.flatnonzero(splits == split)
        part = read_dataset_rows(dataset_paths[split], rows[where], keys)
        for key, values in part.items():
            if key not in out:
                out[key] = np.zeros((len(rows), *values.shape[1:]), values.dtype)
            out[key][where] = values
    return out


def dataset_attrs(dataset_path: str | Path) -> dict:
    with open_hdf5(dataset_path, "r") as h5:
        return {"wavelength": h5["wavelength"][()], **{k: h5.attrs[k] for k in h5.attrs}}


# --- parameters clipped to the number of objects -------------------------------------------------


def clipped(name: str, value: int, low: int, high: int) -> int:
    """``value`` brought into [low, high], with a logged note when that changes it (tiny presets)."""
    result = int(min(max(value, low), high))
    if result != value:
        log.info("%s = %d clipped to %d: values allowed for this set of objects are [%d, %d]", name, value, result,
                 low, high)  # fmt: skip
    return result


def need_objects(n: int, minimum: int, what: str) -> None:
    if n < minimum:
        raise ValueError(f"{what} needs at least {minimum} objects, the held-out set has {n}")


# --- UMAP ---------------------------------------------------------------------------------------


def import_umap():
    """umap-learn, imported on first use (numba sets up its compilation on import, which the other
    functions here don't need).

    umap-learn and pynndescent ask numba to cache compiled code beside their source files, or else
    under ~/.cache/numba. From a read-only install (a shared environment, a container) with no
    writable home, numba's import fails with "cannot cache function ...: no locator available".

    Raises:
        RuntimeError: then, naming the package file and the fix (NUMBA_CACHE_DIR).
    """
    try:
        import umap
    except RuntimeError as err:
        if "cannot cache function" not in str(err):
            raise
        raise RuntimeError(
            f"numba, which umap-learn uses, cannot write its compilation cache ({err}): the installed "
            "package is read-only and so is ~/.cache. Set NUMBA_CACHE_DIR to a writable directory "
            "(e.g. export NUMBA_CACHE_DIR=$TMPDIR/numba-cache) and rerun."
        ) from err
    return umap


def umap_projection(vectors: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """2-D UMAP of ``vectors`` (seeded, hence single-threaded and reproducible)."""
    umap = import_umap()
    n = len(vectors)
    need_objects(n, 4, "UMAP")
    n_neighbors = clipped("structure.umap.n_neighbors", n_neighbors, 2, n - 1)
    # The spectral initialisation solves an eigenproblem of size n - 1 that fails on tiny sets.
    init = "spectral" if n > 2 * n_neighbors + 2 else "random"
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, init=init, n_components=2)
    return reducer.fit_transform(np.asarray(vectors, dtype=np.float32)).astype(np.float64)


def write_umap_tables(
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    outputs: dict[str, str | Path],
    n_neighbors: int,
    min_dist: float,
    seed: int,
) -> None:
    """The UMAP of each modality of ``outputs`` (modality -> parquet path), as TARGETID, SPLIT, ROW,
    UMAP_1, UMAP_2."""
    embeddings = load_heldout(embedding_paths, splits)
    for modality, output in outputs.items():
        xy = umap_projection(modality_vectors(embeddings, modality), n_neighbors, min_dist, seed)
        table = row_keys(embeddings).assign(UMAP_1=xy[:, 0], UMAP_2=xy[:, 1])
        with atomic_path(output) as tmp:
            table.to_parquet(tmp, index=False)


def read_umap_table(path: str | Path) -> pd.DataFrame:
    table = pd.read_parquet(path)
    missing = {*ROW_KEYS, "UMAP_1", "UMAP_2"} - set(table.columns)
    if missing:
        raise KeyError(f"{path}: no columns {sorted(missing)}; expected a table of the umap rule")
    return table


# --- DBSCAN on the image UMAP, and clusters against a truth flag ---------------------------------


def dbscan_labels(xy: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN cluster of each point (-1: noise)."""
    from sklearn.cluster import DBSCAN

    min_samples = clipped("structure.dbscan.min_samples", min_samples, 1, len(xy))
    return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(xy)


def write_dbscan_clusters(umap_path: str | Path, output: str | Path, eps: float, min_samples: int) -> None:
    table = read_umap_table(umap_path)
    labels = dbscan_labels(table[["UMAP_1", "UMAP_2"]].to_numpy(), eps, min_samples)
    log.info("DBSCAN: %d clusters, %d of %d points noise", labels.max() + 1, np.sum(labels < 0), len(labels))
    with atomic_path(output) as tmp:
        table[ROW_KEYS].assign(CLUSTER=labels).to_csv(tmp, index=False)


def cluster_truth_table(labels: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """Per cluster: how many of its members carry the truth flag, and how it recovers them.

    precision = flagged members / members; recall = flagged members / all flagged objects;
    f1 their harmonic mean. Chance, for a cluster of the same size drawn at random: precision is
    the base rate (flagged / all objects) and recall its share of all objects. ``best_match``
    marks the real cluster (not noise, label -1) with the highest f1 (ties: the lower label).
    """
    labels, truth = np.asarray(labels), np.asarray(truth, dtype=bool)
    if labels.shape != truth.shape:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} must be row-aligned")
    n, n_flagged = len(labels), int(truth.sum())
    rows = []
    for label in np.unique(labels):
        members = labels == label
        n_members, hits = int(members.sum()), int(truth[members].sum())
        precision = hits / n_members
        recall = hits / n_flagged if n_flagged else np.nan
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        rows.append({
            "cluster": int(label), "n_members": n_members, "n_flagged": hits, "precision": precision,
            "recall": recall, "f1": f1, "chance_precision": n_flagged / n, "chance_recall": n_members / n,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table["lift"] = table.precision / table.chance_precision if n_flagged else np.nan
    real = table[table.cluster >= 0]
    table["best_match"] = False
    if len(real) and n_flagged:
        table.loc[real.f1.idxmax(), "best_match"] = True  # idxmax takes the first, i.e. lower label
    return table


def write_cluster_truth_table(
    clusters_path: str | Path,
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    output: str | Path,
    truth_column: str = "TRUTH_ARTEFACT",
) -> None:
    clusters = pd.read_csv(clusters_path)
    embeddings = load_heldout(embedding_paths, splits)
    check_aligned(clusters, embeddings, clusters_path)
    if truth_column not in embeddings:
        raise KeyError(
            f"{list(map(str, embedding_paths))}: no {truth_column!r} column; the cluster-vs-truth "
            "table needs a source with a truth flag (the mock survey)"
        )
    table = cluster_truth_table(clusters.CLUSTER.to_numpy(), embeddings[truth_column])
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


# --- k-means on the spectrum embeddings, k by silhouette -----------------------------------------


SILHOUETTE_SAMPLE = 10_000


def silhouette_scan(vectors: np.ndarray, k_min: int, k_max: int, seed: int) -> pd.DataFrame:
    """k-means for every k in [k_min, k_max] (clipped to [2, n - 1]): silhouette and inertia."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(vectors)
    need_objects(n, 3, "k-means with a silhouette score")
    k_max = clipped("structure.kmeans.k_max", k_max, 2, n - 1)
    k_min = clipped("structure.kmeans.k_min", k_min, 2, k_max)
    # The silhouette costs n² distances; above SILHOUETTE_SAMPLE objects a fixed random subset
    # estimates it (to ~0.01 at paper scale) in seconds instead of minutes per k.
    sample = min(n, SILHOUETTE_SAMPLE)
    rows = []
    for k in range(k_min, k_max + 1):
        model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
        score = silhouette_score(vectors, model.labels_, sample_size=sample, random_state=seed)
        rows.append({"k": k, "silhouette": score, "inertia": model.inertia_})
    scan = pd.DataFrame(rows)
    scan["chosen"] = scan.k == choose_k(scan)
    return scan


def choose_k(scan: pd.DataFrame) -> int:
    """The k of the highest silhouette (ties: the smaller k)."""
    return int(scan.k[scan.silhouette.idxmax()])


def kmeans_labels(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)


def write_kmeans_clusters(
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    clusters_output: str | Path,
    silhouette_output: str | Path,
    k_min: int,
    k_max: int,
    seed: int,
) -> None:
    embeddings = load_heldout(embedding_paths, splits)
    vectors = modality_vectors(embeddings, "spectrum")
    scan = silhouette_scan(vectors, k_min, k_max, seed)
    k = choose_k(scan)
    log.info("k-means: k = %d chosen, silhouette %.3f", k, scan.silhouette.max())
    labels = kmeans_labels(vectors, k, seed)
    with atomic_path(silhouette_output) as tmp:
        scan.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(clusters_output) as tmp:
        row_keys(embeddings).assign(CLUSTER=labels).to_csv(tmp, index=False)
