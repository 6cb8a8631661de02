import numpy as np
import pandas as pd
import pytest

from astroclip_pipeline.data.cuts import apply_cuts
from astroclip_pipeline.data.split import assign_split


def test_cuts_count_each_row_once_in_order():
    catalogue = pd.DataFrame(
        {
            "LOGMSTAR": [10.0, -999.0, 10.5, 11.0, -1.0, np.nan, 9.0],
            "MAG_G": [18.0, 0.0, 18.0, 0.0, 18.0, 18.0, 18.0],
            "MAG_R": [17.0, 17.0, -5.0, 0.0, 17.0, 17.0, 17.0],
            "MAG_Z": [16.0, 16.0, 16.0, 16.0, 16.0, 16.0, np.nan],
        }
    )
    keep, removed = apply_cuts(catalogue)
    np.testing.assert_array_equal(keep, [True, False, False, False, False, False, False])
    # row 1 fails LOGMSTAR and MAG_G but is counted once, by the first cut it fails
    assert removed == {"LOGMSTAR > 0": 3, "MAG_G > 0": 1, "MAG_R > 0": 1, "MAG_Z > 0": 1}
    assert sum(removed.values()) == len(catalogue) - keep.sum()


def test_cut_on_missing_column_names_it():
    with pytest.raises(KeyError, match="MAG_Z"):
        apply_cuts(pd.DataFrame({"LOGMSTAR": [1.0], "MAG_G": [1.0], "MAG_R": [1.0]}))


FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_split_is_stable_when_targets_are_added():
    rng = np.random.default_rng(0)
    first = rng.integers(39627000000000000, 39640000000000000, 3000)
    more = rng.integers(39627000000000000, 39640000000000000, 5000)
    before = assign_split(first, FRACTIONS)
    after = assign_split(np.concatenate([more[:2000], first, more[2000:]]), FRACTIONS)
    np.testing.assert_array_equal(after[2000 : 2000 + len(first)], before)
    np.testing.assert_array_equal(assign_split(first[::-1], FRACTIONS), before[::-1])


def test_split_fractions_are_honoured():
    ids = np.arange(39627000000000000, 39627000000000000 + 20000)
    split = assign_split(ids, FRACTIONS)
    for name, fraction in FRACTIONS.items():
        assert abs((split == name).mean() - fraction) < 0.01, name


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="add up to 1"):
        assign_split(np.arange(3), {"train": 0.8, "val": 0.3, "test": 0.1})
    with pytest.raises(ValueError, match="exactly"):
        assign_split(np.arange(3), {"train": 0.9, "val": 0.1})
