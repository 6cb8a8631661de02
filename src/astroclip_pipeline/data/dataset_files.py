"""Stage 2: cross-match the raw shards with the catalogue, cut, split, and write the dataset files.

``results/data/{train,val,test}.h5`` hold, row-aligned: ``image`` (n, 3, size, size) in nanomaggies,
the g, r, z planes (``shards.MODEL_BANDS``) picked by name from whatever bands the cutout shards
hold, ``COVERAGE_G/R/Z`` (each band's fraction of pixels with data, ``legacysurvey.band_coverage``),
``spectrum`` and ``ivar`` (n, n_wave) in 1e-17 erg/s/cm²/Å (ivar = 0 wherever the survey masked a
pixel), ``wavelength`` (n_wave,) in Å, ``TARGETID`` and every catalogue column as PROVABGS spells
it. Physical units are kept: normalisation belongs to each model's preprocessing.

This stage is the last line of defence against values that are not measurements: a spectrum
pixel with ivar > 0 whose flux or ivar is not finite, or a non-finite image pixel, stops the build
with :class:`NonFiniteValueError` naming the shard, the TARGETID and the pixel (the sources flag
such pixels before they write a shard, so this means a shard written some other way). A
non-finite flux with ivar 0 carries no weight and is written as 0.

Shards are processed one at a time and appended, so memory stays at one shard whatever the
survey's size. Rows are chunked one per chunk, for fast random reads by the training loaders.
"""

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..files import atomic_path, open_hdf5
from ..sources.desi import FLUX_UNIT
from ..sources.legacysurvey import band_coverage
from ..sources.shards import MODEL_BANDS, read_cutout_shard, read_missing, read_spectra_shard
from .cuts import apply_cuts
from .split import SPLITS, assign_split


class NonFiniteValueError(ValueError):
    """A dataset row would hold a non-finite value where it carries weight."""


def _finite_rows(shard_path, targetid: np.ndarray, spectrum: np.ndarray, ivar: np.ndarray, image: np.ndarray):
    """(spectrum, ivar) with weightless non-finite fluxes set to 0; raise on any other non-finite value."""
    for name, values, bad in (
        ("ivar", ivar, ~np.isfinite(ivar)),
        ("flux", spectrum, ~np.isfinite(spectrum) & (ivar > 0)),
        ("image", image, ~np.isfinite(image)),
    ):
        if bad.any():
            first = np.argwhere(bad)[0]
            raise NonFiniteValueError(
                f"{shard_path}: TARGETID {int(targetid[first[0]])} has {name} {values[tuple(first)]} at pixel "
                f"{tuple(int(i) for i in first[1:])} ({int(bad.sum())} such value(s) in this shard); every value "
                "with weight must be finite (see desi.flag_invalid_pixels)"
            )
    return np.where(np.isfinite(spectrum), spectrum, 0.0).astype(np.float32), ivar


#: Bookkeeping columns of targets.parquet that do not belong in the dataset.
_NOT_COPIED = ("SHARD",)


class _SplitWriter:
    """Appends rows to one split's HDF5 file, growing its datasets shard by shard."""

    def __init__(self, h5: h5py.File):
        self.h5 = h5
        self.n = 0

    def _append(self, name: str, values: np.ndarray) -> None:
        if name not in self.h5:
            if values.dtype.kind in "OUT":
                values = values.astype(h5py.string_dtype())
            chunks = (1, *values.shape[1:]) if values.ndim > 1 else True
            self.h5.create_dataset(
                name, shape=(0, *values.shape[1:]), maxshape=(None, *values.shape[1:]),
                dtype=values.dtype, chunks=chunks, track_times=False,
            )  # fmt: skip
        dataset = self.h5[name]
        dataset.resize(self.n + len(values), axis=0)
        dataset[self.n :] = values

    def append(self, image: np.ndarray, spectrum: np.ndarray, ivar: np.ndarray, catalogue: pd.DataFrame) -> None:
        self._append("image", image)
        self._append("spectrum", spectrum)
        self._append("ivar", ivar)
        for column in catalogue.columns:
            self._append(column, catalogue[column].to_numpy())
        self.n += len(catalogue)


def _model_planes(cutouts, path) -> list[int]:
    """Indices of the g, r, z planes in a cutout shard, found by its ``bands`` attribute."""
    absent = [band for band in MODEL_BANDS if band not in cutouts.bands]
    if absent:
        raise ValueError(f"{path}: holds bands {cutouts.bands!r}, no {absent}; the models read {MODEL_BANDS!r}")
    return [cutouts.bands.index(band) for band in MODEL_BANDS]


def _check_grid(wavelength: np.ndarray | None, shard_wavelength: np.ndarray, path) -> np.ndarray:
    if wavelength is not None and not np.array_equal(wavelength, shard_wavelength):
        raise ValueError(f"{path}: wavelength grid differs from the first shard's; all shards must share one grid")
    return shard_wavelength


def build_dataset(
    targets_path: str | Path,
    spectra_paths: Sequence[str | Path],
    cutout_paths: Sequence[str | Path],
    missing_paths: Sequence[str | Path],
    output_paths: dict[str, str | Path],
    counts_path: str | Path,
    split_fractions: dict[str, float],
) -> pd.DataFrame:
    """Write the three split files and a table of what each step kept; return that table."""
    targets = pd.read_parquet(targets_path)
    if "TARGETID" not in targets:
        raise KeyError(f"{targets_path}: no TARGETID column")
    if len(spectra_paths) != len(cutout_paths):
        raise ValueError(f"{len(spectra_paths)} spectra shards but {len(cutout_paths)} cutout shards")
    missing = pd.concat([read_missing(p) for p in missing_paths], ignore_index=True)
    catalogue_columns = [c for c in targets.columns if c not in _NOT_COPIED]

    n_matched = 0
    removed_by_cut: dict[str, int] = {}
    per_split = dict.fromkeys(SPLITS, 0)
    wavelength = None
    with ExitStack() as stack:
        files = {
            split: stack.enter_context(open_hdf5(stack.enter_context(atomic_path(output_paths[split])), "w"))
            for split in SPLITS
        }
        writers = {split: _SplitWriter(h5) for split, h5 in files.items()}
        for spectra_path, cutout_path in tqdm(list(zip(spectra_paths, cutout_paths, strict=True)), desc="shards"):
            spectra = read_spectra_shard(spectra_path)
            cutouts = read_cutout_shard(cutout_path)
            planes = _model_planes(cutouts, cutout_path)
            wavelength = _check_grid(wavelength, spectra.wavelength, spectra_path)
            both = np.intersect1d(spectra.targetid, cutouts.targetid)
            rows = targets[targets.TARGETID.isin(both)].reset_index(drop=True)
            n_matched += len(rows)
            keep, removed = apply_cuts(rows)
            for name, count in removed.items():
                removed_by_cut[name] = removed_by_cut.get(name, 0) + count
            rows = rows[keep].reset_index(drop=True)
            spectrum_row = pd.Series(np.arange(len(spectra.targetid)), index=spectra.targetid)[rows.TARGETID].to_numpy()
            cutout_row = pd.Series(np.arange(len(cutouts.targetid)), index=cutouts.targetid)[rows.TARGETID].to_numpy()
            split = assign_split(rows.TARGETID.to_numpy(), split_fractions)
            for name in SPLITS:
                chosen = split == name
                if not chosen.any():
                    continue
                ivar = np.where(spectra.mask[spectrum_row[chosen]] == 0, spectra.ivar[spectrum_row[chosen]], 0.0)
                image = cutouts.image[cutout_row[chosen]][:, planes]
                spectrum, ivar = _finite_rows(
                    f"{spectra_path} / {cutout_path}",
                    rows.TARGETID.to_numpy()[chosen],
                    spectra.flux[spectrum_row[chosen]],
                    ivar.astype(np.float32),
                    image,
                )
                catalogue = rows.loc[chosen, catalogue_columns].reset_index(drop=True)
                coverage = band_coverage(image)
                for k, band in enumerate(MODEL_BANDS):
                    catalogue[f"COVERAGE_{band.upper()}"] = coverage[:, k].astype(np.float32)
                writers[name].append(image, spectrum, ivar, catalogue)
                per_split[name] += int(chosen.sum())
        if wavelength is None:
            raise ValueError("no spectra shards given")
        for h5 in files.values():
            h5.create_dataset("wavelength", data=wavelength, track_times=False)
            h5.attrs["flux_unit"] = FLUX_UNIT
            h5.attrs["image_unit"] = "nanomaggy"
            h5.attrs["bands"] = MODEL_BANDS
            h5.attrs["pixscale"] = cutouts.pixscale
            # which target selection the file was made from (the workflow's guard against a
            # deleted selection reads it; a file of another source is then simply out of date)
            h5.attrs["targets"] = str(targets_path)

    counts = [("targets selected", len(targets), len(targets))]
    missing_by_reason = missing.groupby("reason").size() if len(missing) else pd.Series(dtype=int)
    undelivered = len(targets) - n_matched
    counts.append(("not delivered (spectrum or cutout missing)", undelivered, n_matched))
    remaining = n_matched
    for name, count in removed_by_cut.items():
        remaining -= count
        counts.append((f"cut {name}", count, remaining))
    for name in SPLITS:
        counts.append((f"split {name}", None, per_split[name]))
    table = pd.DataFrame(counts, columns=["step", "removed", "remaining"])
    table["removed"] = table["removed"].astype("Int64")
    for reason, count in missing_by_reason.items():
        table.loc[len(table)] = (f"  of which missing: {reason}", count, None)
    with atomic_path(counts_path) as tmp:
        table.to_csv(tmp, index=False)
    return table
