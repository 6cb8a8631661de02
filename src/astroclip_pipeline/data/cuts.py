"""The paper's dataset cuts on the PROVABGS catalogue, applied in order and counted."""

import numpy as np
import pandas as pd

#: (name, column): a row is kept when the column is finite and > 0. LOGMSTAR <= 0 marks a failed
#: SED fit in PROVABGS; a non-positive magnitude marks missing photometry.
PAPER_CUTS = (
    ("LOGMSTAR > 0", "LOGMSTAR"),
    ("MAG_G > 0", "MAG_G"),
    ("MAG_R > 0", "MAG_R"),
    ("MAG_Z > 0", "MAG_Z"),
)


def apply_cuts(catalogue: pd.DataFrame, cuts=PAPER_CUTS) -> tuple[np.ndarray, dict[str, int]]:
    """Return a boolean keep-mask and, per cut in order, how many rows that cut removed.

    A row removed by an earlier cut is not counted again by a later one, so the counts add up to
    the number of rows removed.
    """
    keep = np.ones(len(catalogue), dtype=bool)
    removed: dict[str, int] = {}
    for name, column in cuts:
        if column not in catalogue:
            raise KeyError(f"cut {name!r} needs column {column!r}, which the catalogue lacks")
        values = catalogue[column].to_numpy(dtype=np.float64)
        passes = np.isfinite(values) & (values > 0)
        removed[name] = int(np.count_nonzero(keep & ~passes))
        keep &= passes
    return keep, removed
