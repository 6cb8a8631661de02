"""The ``astroclip-hdf5`` source: the AstroCLIP authors' prepared file, converted to raw shards.

The official file (``astroclip_desi.1.1.5.h5``, ~56-60 GB) holds groups ``"0"``..``"9"``, each with
``images`` (N, 152, 152, 3) float32 grz cutouts in nanomaggies (channels last, g, r, z),
``spectra`` (N, 7781, 1) float32 DESI flux on the implicit coadd grid (3600-9824 Å, 0.8 Å) in
1e-17 erg/s/cm²/Å, ``redshifts`` (N,) and ``targetids`` (N,). It stores no inverse variance, no
mask and no wavelengths. Converting it to the raw-shard contract of :mod:`shards`:

- images are transposed to (N, 3, 152, 152), the layout every other source writes;
- the wavelength grid is the DESI grid of :mod:`desi` (7781 pixels is only that grid);
- the file has no noise estimate, so every pixel gets ``ivar = 1`` and ``mask = 0``: equal
  weights, which is what AstroCLIP's own training did with this file. The shard says so in its
  ``ivar_note`` attribute, and nothing downstream may read these ivars as a noise level. A
  non-finite flux is no measurement, as in every source (``desi.flag_invalid_pixels``): ivar 0
  and a mask bit; a spectrum with no finite flux at all is missing (``no_valid_pixel``);
- the redshift becomes ``Z_HP``; PROVABGS, cross-matched by TARGETID, gives RA, DEC, magnitudes
  and LOGMSTAR. Targets without a PROVABGS row are not selected (the dataset's cuts need
  LOGMSTAR > 0). A TARGETID that appears more than once keeps its first row.

Shards are cut in (group, row) order, so that each shard reads ascending rows of one or two groups.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..files import HDF5LockError, atomic_path, open_hdf5
from .desi import N_PIXELS, wavelength_grid
from .desi_edr import assign_shards, shard_targets
from .legacysurvey import NON_FINITE, no_data_reason
from .provabgs import crossmatch_provabgs, read_provabgs
from .shards import (
    MISSING_COLUMNS,
    CutoutShard,
    SpectraShard,
    write_cutout_shard,
    write_missing,
    write_spectra_files,
)

log = logging.getLogger(__name__)

ASTROCLIP_HDF5_URL = "https://users.flatironinstitute.org/~flanusse/astroclip_desi.1.1.5.h5"
SOURCE_NAME = "astroclip-hdf5"
DATASETS = ("images", "spectra", "redshifts", "targetids")
IMAGE_SIZE = 152
BANDS = "grz"
PIXSCALE = 0.262
IVAR_NOTE = (
    "the AstroCLIP HDF5 stores no inverse variance or mask: ivar = 1 and mask = 0 are placeholders "
    "(equal weights), not a noise estimate"
)


class AstroclipHdf5FormatError(ValueError):
    """The file is not laid out like the official AstroCLIP HDF5."""


def _groups(h5: h5py.File, path, groups=None) -> list[str]:
    present = [name for name, obj in h5.items() if isinstance(obj, h5py.Group)]
    if groups is None:
        chosen = present
    else:
        chosen = [str(g) for g in groups]
        absent = [g for g in chosen if g not in present]
        if absent:
            raise AstroclipHdf5FormatError(f"{path}: no group(s) {absent}; it has {present}")
    if not chosen:
        raise AstroclipHdf5FormatError(f"{path}: no groups; the AstroCLIP file has groups '0'..'9' holding {DATASETS}")
    return chosen


def validate_astroclip_hdf5(path: str | Path, groups=None) -> None:
    """Raise AstroclipHdf5FormatError unless every (chosen) group has the official datasets and shapes.

    Reads metadata only, so it is cheap on the 56 GB file; used to accept a download.
    """
    try:
        h5 = open_hdf5(path, "r")
    except HDF5LockError:
        raise  # a readable file that another process holds: not a format error
    except OSError as err:
        raise AstroclipHdf5FormatError(f"{path}: not a readable HDF5 file ({err})") from err
    with h5:
        for group in _groups(h5, path, groups):
            absent = [d for d in DATASETS if d not in h5[group]]
            if absent:
                raise AstroclipHdf5FormatError(f"{path}: group {group} lacks {absent}; expected {DATASETS}")
            n = len(h5[group]["targetids"])
            expected = {
                "images": (n, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)),
                "spectra": (n, N_PIXELS, 1),
                "redshifts": (n,),
                "targetids": (n,),
            }
            for name, shape in expected.items():
                if h5[group][name].shape != shape:
                    raise AstroclipHdf5FormatError(
                        f"{path}: {group}/{name} has shape {h5[group][name].shape}, expected {shape}"
                    )


def read_index(path: str | Path, groups=None) -> pd.DataFrame:
    """TARGETID, Z_HP, GROUP and ROW of every object of the file (or of the chosen groups)."""
    validate_astroclip_hdf5(path, groups)
    frames = []
    with open_hdf5(path, "r") as h5:
        for group in _groups(h5, path, groups):
            targetid = np.asarray(h5[group]["targetids"][()], dtype=np.int64)
            frames.append(
                pd.DataFrame(
                    {
                        "TARGETID": targetid,
                        "Z_HP": np.asarray(h5[group]["redshifts"][()], dtype=np.float64),
                        "GROUP": group,
                        "ROW": np.arange(len(targetid), dtype=np.int64),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def select_targets(
    path: str | Path,
    provabgs_path: str | Path,
    targets_per_shard: int = 1000,
    max_targets: int | None = None,
    groups=None,
) -> pd.DataFrame:
    """The targets table of the file's objects that PROVABGS has a row for, with shard indices."""
    if targets_per_shard < 1:
        raise ValueError(f"targets_per_shard must be >= 1, got {targets_per_shard}")
    index = read_index(path, groups)
    repeated = index.TARGETID.duplicated()
    if repeated.any():
        log.warning("%s: %d repeated TARGETID(s), first rows kept: %s", path, repeated.sum(),
                    index.TARGETID[repeated].tolist()[:10])  # fmt: skip
        index = index[~repeated]
    provabgs = read_provabgs(provabgs_path)
    matched = crossmatch_provabgs(index, provabgs)
    log.info("%s: %d objects, %d in PROVABGS (%s)", path, len(index), len(matched), provabgs_path)
    if matched.empty:
        raise ValueError(f"no targets: none of the {len(index)} objects of {path} has a row in {provabgs_path}")
    matched = assign_shards(matched, targets_per_shard, ["GROUP", "ROW"])
    if max_targets is not None and len(matched) > max_targets:
        matched = matched.head(max_targets)
    return matched


def write_targets(
    path: str | Path,
    provabgs_path: str | Path,
    targets_path: str | Path,
    targets_per_shard: int = 1000,
    max_targets: int | None = None,
    groups=None,
) -> int:
    """Select the targets and write ``targets.parquet``; return the number of shards."""
    targets = select_targets(path, provabgs_path, targets_per_shard, max_targets, groups)
    with atomic_path(targets_path) as tmp:
        targets.to_parquet(tmp, index=False)
    return int(targets.SHARD.max()) + 1


def _read_rows(h5: h5py.File, rows: pd.DataFrame, name: str) -> np.ndarray:
    """``name`` of these (GROUP, ROW) rows, in the rows' order (h5py reads ascending rows per group)."""
    out = None
    for group, positions in rows.groupby("GROUP", sort=False).indices.items():
        wanted = rows.ROW.to_numpy()[positions]
        order = np.argsort(wanted)
        data = h5[group][name][wanted[order]]
        if out is None:
            out = np.empty((len(rows), *data.shape[1:]), data.dtype)
        out[positions[order]] = data
    return out


def convert_spectra_shard(
    path: str | Path, targets_path: str | Path, shard: int, spectra_path: str | Path, missing_path: str | Path
) -> None:
    """Write one shard's spectra (ivar = 1, mask = 0: see the module docstring) and missing list."""
    rows = shard_targets(targets_path, shard)
    with open_hdf5(path, "r") as h5:
        flux = _read_rows(h5, rows, "spectra")[..., 0].astype(np.float32)
    shard_data = SpectraShard(
        rows.TARGETID.to_numpy(np.int64), wavelength_grid(), flux, np.ones_like(flux), np.zeros(flux.shape, np.uint32)
    )
    missing = write_spectra_files(
        spectra_path, missing_path, shard_data, pd.DataFrame(columns=MISSING_COLUMNS), SOURCE_NAME,
        attrs={"ivar_note": IVAR_NOTE},
    )  # fmt: skip
    log.info("%s: %d spectra, %d without a finite flux", spectra_path, len(rows) - len(missing), len(missing))


def convert_cutouts_shard(
    path: str | Path, targets_path: str | Path, shard: int, cutouts_path: str | Path, missing_path: str | Path
) -> None:
    """Write one shard's cutouts as (n, 3, 152, 152) nanomaggies, and its missing list."""
    rows = shard_targets(targets_path, shard)
    with open_hdf5(path, "r") as h5:
        images = np.ascontiguousarray(_read_rows(h5, rows, "images").transpose(0, 3, 1, 2), dtype=np.float32)
    finite = np.isfinite(images).all(axis=(1, 2, 3))
    # the same rules for "no data" as the cutout service's answers (legacysurvey.no_data_reason)
    reason = np.array(
        [(no_data_reason(image, BANDS) or "") if ok else NON_FINITE for image, ok in zip(images, finite, strict=True)]
    )
    keep = reason == ""
    missing = pd.DataFrame({"TARGETID": rows.TARGETID[~keep], "reason": reason[~keep]}, columns=MISSING_COLUMNS)
    write_missing(missing_path, missing)
    write_cutout_shard(
        cutouts_path, CutoutShard(rows.TARGETID.to_numpy(np.int64)[keep], images[keep], BANDS, PIXSCALE), SOURCE_NAME
    )
    log.info("%s: %d cutouts, missing: %s", cutouts_path, int(keep.sum()), dict(missing.reason.value_counts()))
