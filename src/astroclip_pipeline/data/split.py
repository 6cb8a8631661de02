"""Deterministic train/val/test assignment from a hash of TARGETID.

A target's split depends on its TARGETID alone, never on which other targets exist, so adding
data never moves an existing object from one split to another (and never leaks test objects into
training when the dataset grows).
"""

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


def unit_hash(targetid: np.ndarray) -> np.ndarray:
    """Map each TARGETID to a number uniform in [0, 1) (BLAKE2b of its 8 little-endian bytes)."""
    ids = np.asarray(targetid, dtype="<i8")
    out = np.empty(ids.shape, dtype=np.float64)
    for i, value in enumerate(ids.ravel()):
        digest = hashlib.blake2b(value.tobytes(), digest_size=8).digest()
        out.flat[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def assign_split(targetid: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """Split name ('train', 'val' or 'test') for each TARGETID, with the given expected fractions."""
    if set(fractions) != set(SPLITS):
        raise ValueError(f"split fractions must name exactly {SPLITS}, got {sorted(fractions)}")
    total = sum(fractions.values())
    if not np.isclose(total, 1.0):
        raise ValueError(f"split fractions must add up to 1, got {total}")
    edges = np.cumsum([fractions[name] for name in SPLITS])
    index = np.searchsorted(edges, unit_hash(targetid), side="right")
    return np.asarray(SPLITS)[np.minimum(index, len(SPLITS) - 1)]
