"""The PROVABGS value-added catalogue of DESI EDR: stellar masses for the BGS galaxies.

The catalogue is one HDF5 file written by astropy (``Table.write(..., format="hdf5")``): a single
compound dataset whose fields are the table's columns. Scalar columns (TARGETID, RA, DEC, Z_HP,
MAG_G/R/Z...) hold one value per galaxy; PROVABGS_LOGMSTAR holds posterior samples of log10 M*
per galaxy, PROVABGS_MCMC (100 x 13) the full chains. :func:`read_provabgs` reads the table with
astropy's own reader (``Table.read``), which honours the conventions astropy wrote it with: a
masked entry (stored as a ``<name>.mask`` field beside the data when the table was written with
``serialize_meta=True``) is no value, whatever number sits underneath. Masked floats become NaN
(so the dataset's cuts remove them and count them), masked integers and booleans become pandas'
missing value, and masked posterior samples are left out of the median ``LOGMSTAR`` (NaN when
all are masked). A masked TARGETID raises. Reading field by field with h5py would return the
numbers under the masks as if measured. Column names are matched case-insensitively (the "lite"
releases spell them ``provabgs_logMstar``) and returned upper-case, as the full release spells them.

Age, metallicity and SFR need the provabgs SPS model (not on PyPI), so only the stellar mass is
derived here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from astropy.table import Table

from ..files import HDF5LockError, open_hdf5
from .catalogue import MaskedKeyError, table_columns

PROVABGS_URL = "https://data.desi.lbl.gov/public/edr/vac/edr/provabgs/v1.0/BGS_ANY_full.provabgs.sv3.v0.hdf5"
#: Columns every PROVABGS file must have for the pipeline to use it.
REQUIRED_COLUMNS = ("TARGETID", "RA", "DEC", "Z_HP", "MAG_G", "MAG_R", "MAG_Z", "PROVABGS_LOGMSTAR")
#: Scalar columns carried into targets.parquet when the file has them.
KEPT_COLUMNS = (
    "TARGETID",
    "RA",
    "DEC",
    "Z_HP",
    "ZERR",
    "MAG_G",
    "MAG_R",
    "MAG_Z",
    "MAG_W1",
    "FIBMAG_R",
    "TSNR2_BGS",
    "PROVABGS_LOGMSTAR_BF",
    "PROVABGS_Z_MAX",
    "PROVABGS_W_ZFAIL",
    "PROVABGS_W_FIBASSIGN",
    "IS_BGS_BRIGHT",
    "IS_BGS_FAINT",
)
#: Smallest plausible size of the full catalogue; a smaller file is an error page or a truncation.
MIN_FULL_SIZE = 1 << 20


class ProvabgsFormatError(ValueError):
    """The file is not a readable PROVABGS catalogue."""


def validate_provabgs_file(path: str | Path, min_size: int = 0, expected_size: int | None = None) -> None:
    """Raise ProvabgsFormatError unless ``path`` is an HDF5 PROVABGS table with the required columns."""
    path = Path(path)
    if not path.is_file():
        raise ProvabgsFormatError(f"{path}: no such file")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ProvabgsFormatError(f"{path}: {size} bytes, expected {expected_size}")
    if size < min_size:
        raise ProvabgsFormatError(f"{path}: only {size} bytes; the PROVABGS catalogue is at least {min_size}")
    with _open(path) as h5:
        _, fields = _table(h5, path)
        absent = [c for c in REQUIRED_COLUMNS if c not in fields]
        if absent:
            raise ProvabgsFormatError(f"{path}: no column(s) {absent}; it has {sorted(fields)}")


def read_provabgs(path: str | Path) -> pd.DataFrame:
    """The scalar columns of KEPT_COLUMNS that the file has, plus LOGMSTAR (posterior median).

    Masked entries come back missing (NaN for floats), as the module docstring says. The whole
    table is read (astropy's HDF5 reader has no column selection): about 1 GB for the full
    PROVABGS release, most of it the MCMC chains.
    """
    validate_provabgs_file(path)
    with _open(path) as h5:
        table_path = _table(h5, path)[0].name
    table = Table.read(path, format="hdf5", path=table_path)
    table.rename_columns(table.colnames, [name.upper() for name in table.colnames])
    try:
        frame = table_columns(table, [c for c in KEPT_COLUMNS if c in table.colnames], path)
    except MaskedKeyError as err:
        raise ProvabgsFormatError(str(err)) from None
    samples = np.ma.masked_invalid(np.ma.asarray(table["PROVABGS_LOGMSTAR"], dtype=np.float64))
    frame["LOGMSTAR"] = np.ma.median(samples.reshape(len(frame), -1), axis=1).filled(np.nan)
    duplicated = frame.TARGETID[frame.TARGETID.duplicated()]
    if len(duplicated):
        raise ProvabgsFormatError(f"{path}: TARGETID(s) {duplicated.tolist()[:10]} appear more than once")
    return frame


def crossmatch_provabgs(targets: pd.DataFrame, provabgs: pd.DataFrame) -> pd.DataFrame:
    """Targets that have a PROVABGS row, with its columns (inner join on TARGETID, targets' order).

    Columns present in both keep the targets' values; PROVABGS's copy is dropped.
    """
    for name, table in (("targets", targets), ("provabgs", provabgs)):
        if "TARGETID" not in table.columns:
            raise KeyError(f"{name} table has no TARGETID column")
    extra = [c for c in provabgs.columns if c == "TARGETID" or c not in targets.columns]
    return targets.merge(provabgs[extra], on="TARGETID", how="inner", validate="one_to_one")


def _open(path: Path) -> h5py.File:
    try:
        return open_hdf5(path, "r")
    except HDF5LockError:
        raise  # a readable file that another process holds: not a format error
    except OSError as err:
        raise ProvabgsFormatError(f"{path}: not a readable HDF5 file ({err})") from err


def _table(h5: h5py.File, path) -> tuple[h5py.Dataset, dict[str, str]]:
    """The catalogue's compound dataset and its field names keyed by upper-case name."""
    tables = []
    h5.visititems(lambda name, obj: tables.append(obj) if isinstance(obj, h5py.Dataset) and obj.dtype.names else None)
    tables = [t for t in tables if "TARGETID" in {n.upper() for n in t.dtype.names}]
    if len(tables) != 1:
        raise ProvabgsFormatError(f"{path}: expected one table with a TARGETID column, found {len(tables)}")
    return tables[0], {name.upper(): name for name in tables[0].dtype.names}
