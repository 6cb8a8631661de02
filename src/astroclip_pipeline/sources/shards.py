"""The raw-shard contract between the sources and the dataset stage (see DESIGN.md, stage 1).

Every source (the mock survey, the real downloads) writes exactly these files:

- ``spectra/shard-{i}.h5``: ``TARGETID`` (n,), ``wavelength`` (n_wave,) in Å, ``flux`` and ``ivar``
  (n, n_wave) float32 in 1e-17 erg/s/cm²/Å (and its inverse square), ``mask`` (n, n_wave) uint32
  with 0 for good pixels, as the survey gives them.
- ``cutouts/shard-{i}.h5``: ``TARGETID`` (n,), ``image`` (n, n_bands, size, size) float32 in
  nanomaggies, with attributes ``bands`` and ``pixscale`` (arcsec/pixel).
- ``{spectra,cutouts}/missing-{i}.csv``: ``TARGETID,reason`` for each target the survey could
  not deliver, so that nothing is dropped silently.
"""

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..files import atomic_path, open_hdf5
from .desi import FLUX_UNIT

MISSING_COLUMNS = ["TARGETID", "reason"]


@dataclass
class SpectraShard:
    targetid: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray


@dataclass
class CutoutShard:
    targetid: np.ndarray
    image: np.ndarray
    bands: str
    pixscale: float


def _create(h5: h5py.File, name: str, data: np.ndarray, chunk_rows: bool = False) -> None:
    # track_times=False: the same inputs give the same bytes, so reruns are reproducible to the bit.
    chunks = (1, *data.shape[1:]) if chunk_rows and data.ndim > 1 and len(data) else None
    h5.create_dataset(name, data=data, chunks=chunks, track_times=False)


def write_spectra_shard(path: str | Path, shard: SpectraShard, source: str, attrs: dict | None = None) -> None:
    """Write a spectra shard; ``attrs`` are extra file attributes (e.g. how ivar was made up)."""
    n = len(shard.targetid)
    for name in ("flux", "ivar", "mask"):
        array = getattr(shard, name)
        if array.shape != (n, len(shard.wavelength)):
            raise ValueError(f"{path}: {name} has shape {array.shape}, expected {(n, len(shard.wavelength))}")
    with atomic_path(path) as tmp, open_hdf5(tmp, "w", track_order=True) as h5:
        _create(h5, "TARGETID", np.asarray(shard.targetid, dtype=np.int64))
        _create(h5, "wavelength", np.asarray(shard.wavelength, dtype=np.float64))
        _create(h5, "flux", np.asarray(shard.flux, dtype=np.float32), chunk_rows=True)
        _create(h5, "ivar", np.asarray(shard.ivar, dtype=np.float32), chunk_rows=True)
        _create(h5, "mask", np.asarray(shard.mask, dtype=np.uint32), chunk_rows=True)
        h5.attrs["flux_unit"] = FLUX_UNIT
        h5.attrs["source"] = source
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value


def read_spectra_shard(path: str | Path) -> SpectraShard:
    with open_hdf5(path, "r") as h5:
        _require(h5, path, ("TARGETID", "wavelength", "flux", "ivar", "mask"))
        return SpectraShard(*(h5[k][()] for k in ("TARGETID", "wavelength", "flux", "ivar", "mask")))


def write_cutout_shard(path: str | Path, shard: CutoutShard, source: str) -> None:
    if shard.image.ndim != 4 or shard.image.shape[0] != len(shard.targetid):
        raise ValueError(f"{path}: image has shape {shard.image.shape}, expected (n_targets, bands, size, size)")
    with atomic_path(path) as tmp, open_hdf5(tmp, "w", track_order=True) as h5:
        _create(h5, "TARGETID", np.asarray(shard.targetid, dtype=np.int64))
        _create(h5, "image", np.asarray(shard.image, dtype=np.float32), chunk_rows=True)
        h5.attrs["bands"] = shard.bands
        h5.attrs["pixscale"] = shard.pixscale
        h5.attrs["unit"] = "nanomaggy"
        h5.attrs["source"] = source


def read_cutout_shard(path: str | Path) -> CutoutShard:
    with open_hdf5(path, "r") as h5:
        _require(h5, path, ("TARGETID", "image"))
        return CutoutShard(h5["TARGETID"][()], h5["image"][()], str(h5.attrs["bands"]), float(h5.attrs["pixscale"]))


def write_missing(path: str | Path, missing: pd.DataFrame) -> None:
    missing = missing.reindex(columns=MISSING_COLUMNS)
    with atomic_path(path) as tmp:
        missing.to_csv(tmp, index=False)


def read_missing(path: str | Path) -> pd.DataFrame:
    missing = pd.read_csv(path, dtype={"TARGETID": np.int64, "reason": str})
    if list(missing.columns) != MISSING_COLUMNS:
        raise ValueError(f"{path}: columns {list(missing.columns)}, expected {MISSING_COLUMNS}")
    return missing


def _require(h5: h5py.File, path, names) -> None:
    absent = [n for n in names if n not in h5]
    if absent:
        raise KeyError(f"{path}: missing dataset(s) {absent}; a raw shard holds {list(names)}")
