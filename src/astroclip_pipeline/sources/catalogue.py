"""Catalogue tables (FITS or HDF5, written by astropy or fitsio) as pandas frames, masks honoured.

Catalogues are read with astropy's ``Table.read``, which applies the conventions of the format
that wrote them (FITS ``TNULL`` for integers, NaN for floats, astropy's ``<name>.mask`` fields in
HDF5): a masked entry is no value, whatever number is stored under it. :func:`table_columns`
turns the columns of such a table into pandas columns where masked entries are missing: NaN for
floats, pandas' missing value (``pd.NA``) for integers, booleans and strings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.table import Table


class MaskedKeyError(ValueError):
    """A key column (one that must identify every row) has masked entries."""


def table_columns(table: Table, columns, source, keys=("TARGETID",)) -> pd.DataFrame:
    """``columns`` of ``table`` as a frame: native byte order, strings stripped, masks honoured.

    ``source`` names the file in errors. A column of ``keys`` with a masked entry raises
    :class:`MaskedKeyError`; absent columns raise a KeyError listing what the table has.
    """
    absent = [c for c in columns if c not in table.colnames]
    if absent:
        raise KeyError(f"{source}: no column(s) {absent}; it has {table.colnames}")
    return pd.DataFrame({name: _column(table[name], name, source, keys) for name in columns})


def _column(column, name: str, source, keys):
    values = _native(np.asarray(column))
    mask = np.asarray(getattr(column, "mask", np.zeros(len(values), bool)), dtype=bool)
    if values.dtype.kind in "SU":
        values = pd.Series(values.astype(str)).str.strip().to_numpy(object)
    if not mask.any():
        return values
    if name in keys:
        raise MaskedKeyError(f"{source}: {name} is masked on {int(mask.sum())} row(s); every row needs one")
    if values.dtype.kind == "f":
        return np.where(mask, np.nan, values)
    if values.dtype.kind in "iu":
        return pd.arrays.IntegerArray(values, mask)
    if values.dtype.kind == "b":
        return pd.arrays.BooleanArray(values, mask)
    return pd.array(np.where(mask, None, values), dtype="string")


def _native(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return values.astype(str)
    return values.astype(values.dtype.newbyteorder("="))
