"""The raw-shard contract between the sources and the dataset stage (see DESIGN.md, stage 1).

Every source (the mock survey, the real downloads) writes exactly these files:

- ``spectra/shard-{i}.h5``: ``TARGETID`` (n,), ``wavelength`` (n_wave,) in Å, ``flux`` and ``ivar``
  (n, n_wave) float32 in 1e-17 erg/s/cm²/Å (and its inverse square), ``mask`` (n, n_wave) uint32
  with 0 for good pixels, as the survey gives them, plus the pipeline's own bits for values that
  are not measurements (``desi.flag_invalid_pixels``: every such pixel has ivar 0).
- ``cutouts/shard-{i}.h5``: ``TARGETID`` (n,), ``image`` (n, n_bands, size, size) float32 in
  nanomaggies, with attributes ``bands`` and ``pixscale`` (arcsec/pixel).
- ``{spectra,cutouts}/missing-{i}.csv``: ``TARGETID,reason`` for each target the survey could
  not deliver, so that nothing is dropped silently.

Sources write spectra through :func:`write_spectra_files`, the one gate every spectrum passes:
it flags invalid pixels and lists a target without a single valid pixel as missing
(``no_valid_pixel``), so no source can put a NaN or an infinite ivar into a shard.
"""

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..files import atomic_path, open_hdf5
from .desi import FLUX_UNIT, flag_invalid_pixels, has_valid_pixel

MISSING_COLUMNS = ["TARGETID", "reason"]
#: The image bands every model reads, in this order, whatever else a cutout shard holds.
MODEL_BANDS = "grz"
NO_VALID_PIXEL = "no_valid_pixel"


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


def write_spectra_files(
    spectra_path: str | Path,
    missing_path: str | Path,
    shard: SpectraShard,
    missing: pd.DataFrame,
    source: str,
    attrs: dict | None = None,
) -> pd.DataFrame:
    """Write a spectra shard and its missing list; return the missing list as written.

    Every pixel goes through :func:`desi.flag_invalid_pixels`; a target left without any pixel
    with ivar > 0 and mask 0 moves from the shard to the missing list as ``no_valid_pixel``.
    """
    flux, ivar, mask = flag_invalid_pixels(shard.flux, shard.ivar, shard.mask)
    targetid = np.asarray(shard.targetid, np.int64)
    usable = has_valid_pixel(ivar, mask) if len(flux) else np.zeros(0, bool)
    unusable = pd.DataFrame({"TARGETID": targetid[~usable], "reason": NO_VALID_PIXEL})
    frames = [frame for frame in (missing.reindex(columns=MISSING_COLUMNS), unusable) if len(frame)]
    missing = pd.concat(frames) if frames else pd.DataFrame(columns=MISSING_COLUMNS)
    missing = missing.reindex(columns=MISSING_COLUMNS).astype({"TARGETID": np.int64}).reset_index(drop=True)
    kept = SpectraShard(targetid[usable], shard.wavelength, flux[usable], ivar[usable], mask[usable])
    write_missing(missing_path, missing)
    write_spectra_shard(spectra_path, kept, source, attrs)
    return missing


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
