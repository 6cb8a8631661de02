"""Cross-modal retrieval: for each galaxy's spectrum, where its own image ranks among all images.

With L2-normalised embeddings, the similarity is the cosine (a dot product). The rank of the true
partner is 1 + the number of candidates more similar to the query than it; recall@k is the fraction
of queries whose partner ranks k or better. Chance: a random ordering of N candidates gives
recall@k = k / N and a median rank of (N + 1) / 2.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_path
from .embeddings import read_embeddings


def partner_ranks(queries: np.ndarray, candidates: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Rank (1 = first) of candidate i among all candidates for query i; rows row-aligned."""
    if queries.shape != candidates.shape:
        raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} must be row-aligned")
    # A block of query rows at a time: the full similarity matrix of 200,000 galaxies would need 160 GB.
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ candidates.T
        rows = np.arange(len(similarity))
        own = similarity[rows, start + rows]  # from the same product, so rounding cannot reorder a tie
        ranks[start : start + chunk] = 1 + (similarity > own[:, None]).sum(axis=1)
    return ranks


def retrieval_table(image: np.ndarray, spectrum: np.ndarray, ks=(1, 5, 10)) -> pd.DataFrame:
    """Recall@k and median rank in both directions, with chance levels beside them."""
    n = len(image)
    rows = []
    for name, queries, candidates in (("spectrum -> image", spectrum, image), ("image -> spectrum", image, spectrum)):
        ranks = partner_ranks(queries, candidates)
        row = {"direction": name, "n_candidates": n}
        for k in ks:
            row[f"recall@{k}"] = float(np.mean(ranks <= k))
            row[f"chance@{k}"] = min(1.0, k / n)
        row["median_rank"] = float(np.median(ranks))
        row["chance_median_rank"] = (n + 1) / 2
        rows.append(row)
    return pd.DataFrame(rows)


def write_retrieval_table(embeddings_path: str | Path, output: str | Path) -> None:
    embeddings = read_embeddings(embeddings_path)
    table = retrieval_table(embeddings["image_embedding"], embeddings["spectrum_embedding"])
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
