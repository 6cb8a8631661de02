"""The ``desi-edr`` source: EDR galaxies with PROVABGS properties, their spectra and their cutouts.

Target selection reads the EDR redshift catalogue (``zall-pix-edr-vac.fits``: every healpix
redshift with the primary-spectrum flags) and the PROVABGS catalogue, keeps good galaxy spectra
(:func:`desi_coadd.select_galaxy_spectra`) that PROVABGS has a row for, and writes
``targets.parquet`` with the shard index. Targets without a PROVABGS row are not selected: the
dataset's cuts need LOGMSTAR > 0, so their downloads would be thrown away.

Shards are cut from the targets in (SURVEY, PROGRAM, HEALPIX, TARGETID) order, so that the coadd
backend opens few coadd files per shard; the order does not matter to SPARCL or to the cutouts.

Spectra come from one of two backends: SPARCL by TARGETID (:mod:`sparcl`), or the healpix coadd
files under the release root, a URL or a local mirror (:mod:`desi_coadd`). Cutouts come from the
Legacy Survey cutout service (:mod:`legacysurvey`). All three write the raw-shard files of
:mod:`shards`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from ..files import atomic_path
from .desi_coadd import (
    SPECPROD,
    ZCATALOG_COLUMNS,
    read_redshift_catalogue,
    select_galaxy_spectra,
    write_coadd_spectra_shard,
)
from .http import Fetcher
from .legacysurvey import CutoutSpec, ShardSummary, download_cutout_shard
from .provabgs import crossmatch_provabgs, read_provabgs
from .sparcl import SPARCL_URL, SparclService, write_sparcl_spectra_shard

log = logging.getLogger(__name__)

#: zcatalogue column -> targets.parquet column (the names DESIGN.md and PROVABGS use).
TARGET_COLUMNS = {
    "TARGETID": "TARGETID",
    "TARGET_RA": "RA",
    "TARGET_DEC": "DEC",
    "Z": "Z_HP",
    "ZERR": "ZERR",
    "SURVEY": "SURVEY",
    "PROGRAM": "PROGRAM",
    "HEALPIX": "HEALPIX",
}
SPECTRA_BACKENDS = ("sparcl", "coadd")


class ZcatalogFormatError(ValueError):
    """The file is not a DESI redshift catalogue with the columns target selection needs."""


def validate_zcatalog_file(path: str | Path, hdu: str = "ZCATALOG") -> None:
    """Raise ZcatalogFormatError unless ``path`` is a FITS file whose ``hdu`` has ZCATALOG_COLUMNS.

    Reads the headers only, so it is cheap on the multi-GB catalogue; used to accept a download.
    """
    try:
        with fits.open(path, memmap=True) as hdul:
            if hdu not in hdul:
                raise ZcatalogFormatError(f"{path}: no HDU {hdu}; it has {[h.name for h in hdul]}")
            names = hdul[hdu].columns.names
    except OSError as err:
        raise ZcatalogFormatError(f"{path}: not a readable FITS file ({err})") from err
    absent = [c for c in ZCATALOG_COLUMNS if c not in names]
    if absent:
        raise ZcatalogFormatError(f"{path}[{hdu}]: no column(s) {absent}; target selection needs them")


@dataclass(frozen=True)
class TargetSelection:
    """Which EDR spectra become targets; one-to-one with the selection keys of the ``desi:`` block."""

    primary_column: str = "SV_PRIMARY"
    surveys: tuple[str, ...] | None = None
    programs: tuple[str, ...] | None = None
    targets_per_shard: int = 1000
    max_targets: int | None = None

    @classmethod
    def from_config(cls, selection: dict) -> TargetSelection:
        """From the selection keys of the config's ``desi:`` block (lists become tuples)."""
        as_tuple = {k: tuple(selection[k]) for k in ("surveys", "programs") if selection.get(k) is not None}
        return cls(**{**selection, **as_tuple})

    def __post_init__(self):
        if self.targets_per_shard < 1:
            raise ValueError(f"targets_per_shard must be >= 1, got {self.targets_per_shard}")
        if self.max_targets is not None and self.max_targets < 1:
            raise ValueError(f"max_targets must be >= 1 or None, got {self.max_targets}")


def assign_shards(targets: pd.DataFrame, targets_per_shard: int, order: list[str]) -> pd.DataFrame:
    """``targets`` sorted by ``order`` with a SHARD column: consecutive runs of ``targets_per_shard``."""
    targets = targets.sort_values(order, kind="stable").reset_index(drop=True)
    targets["SHARD"] = np.arange(len(targets)) // targets_per_shard
    return targets


def select_targets(zcatalog_path: str | Path, provabgs_path: str | Path, selection: TargetSelection) -> pd.DataFrame:
    """The targets table: good EDR galaxy spectra with a PROVABGS row, with shard indices.

    ``max_targets`` keeps the first N in shard order (a few contiguous healpix pixels), for a
    trial run that exercises every step on a small, spatially compact sample.
    """
    zcat = read_redshift_catalogue(zcatalog_path)
    galaxies = select_galaxy_spectra(
        zcat,
        selection.primary_column,
        list(selection.surveys) if selection.surveys is not None else None,
        list(selection.programs) if selection.programs is not None else None,
    )
    targets = galaxies[list(TARGET_COLUMNS)].rename(columns=TARGET_COLUMNS)
    provabgs = read_provabgs(provabgs_path)
    matched = crossmatch_provabgs(targets, provabgs)
    log.info(
        "%s: %d rows, %d good galaxy spectra; %d of them in PROVABGS (%s, %d rows)",
        zcatalog_path, len(zcat), len(galaxies), len(matched), provabgs_path, len(provabgs),
    )  # fmt: skip
    if matched.empty:
        raise ValueError(
            f"no targets: {len(galaxies)} galaxy spectra in {zcatalog_path} pass the selection {selection}, "
            f"and none of them has a row in {provabgs_path}"
        )
    matched = assign_shards(matched, selection.targets_per_shard, ["SURVEY", "PROGRAM", "HEALPIX", "TARGETID"])
    if selection.max_targets is not None and len(matched) > selection.max_targets:
        log.info("max_targets: keeping the first %d of %d targets", selection.max_targets, len(matched))
        matched = matched.head(selection.max_targets)
    return matched


def write_targets(
    zcatalog_path: str | Path, provabgs_path: str | Path, selection: TargetSelection, targets_path: str | Path
) -> int:
    """Select the targets and write ``targets.parquet``; return the number of shards."""
    targets = select_targets(zcatalog_path, provabgs_path, selection)
    with atomic_path(targets_path) as tmp:
        targets.to_parquet(tmp, index=False)
    n_shards = int(targets.SHARD.max()) + 1
    log.info("%s: %d targets in %d shard(s)", targets_path, len(targets), n_shards)
    return n_shards


def shard_targets(targets_path: str | Path, shard: int) -> pd.DataFrame:
    """The rows of one shard of ``targets.parquet``, in file order."""
    targets = pd.read_parquet(targets_path)
    rows = targets[targets.SHARD == shard].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{targets_path}: no targets in shard {shard} (shards 0-{targets.SHARD.max()})")
    return rows


def download_spectra_shard(
    targets_path: str | Path,
    shard: int,
    spectra_path: str | Path,
    missing_path: str | Path,
    fetcher: Fetcher,
    *,
    backend: str = "sparcl",
    sparcl_url: str = SPARCL_URL,
    sparcl_batch: int = 500,
    root: str | Path | None = None,
    specprod: str = SPECPROD,
) -> None:
    """Write one shard's spectra and missing list from SPARCL (``backend="sparcl"``) or the coadds
    under ``root`` (``backend="coadd"``, an https URL or a local mirror of the release)."""
    rows = shard_targets(targets_path, shard)
    if backend == "sparcl":
        service = SparclService(fetcher, sparcl_url)
        service.check_version()  # a protocol change on the server side stops here, with its version
        write_sparcl_spectra_shard(rows, spectra_path, missing_path, service, sparcl_batch)
    elif backend == "coadd":
        if root is None:
            raise ValueError("the coadd backend needs root, the release's URL or local mirror directory")
        write_coadd_spectra_shard(rows, root, spectra_path, missing_path, specprod, agent=fetcher.user_agent)
    else:
        raise ValueError(f"unknown spectra backend {backend!r}; expected one of {SPECTRA_BACKENDS}")


def download_cutouts_shard(
    targets_path: str | Path,
    shard: int,
    cutouts_path: str | Path,
    missing_path: str | Path,
    fetcher: Fetcher,
    spec: CutoutSpec,
    *,
    record_failures: bool = False,
) -> ShardSummary:
    """Fetch one shard's Legacy Survey cutouts into ``cutouts_path`` and ``missing_path``."""
    cutouts_path, missing_path = Path(cutouts_path), Path(missing_path)
    expected = (f"shard-{shard}.h5", f"missing-{shard}.csv")
    if cutouts_path.parent != missing_path.parent or (cutouts_path.name, missing_path.name) != expected:
        # download_cutout_shard names its files itself (and its resume sidecar beside them).
        raise ValueError(f"cutout shard {shard} is written as <dir>/{expected[0]} and <dir>/{expected[1]}")
    targets = pd.read_parquet(targets_path, columns=["TARGETID", "RA", "DEC", "SHARD"])
    summary = download_cutout_shard(targets, shard, cutouts_path.parent, fetcher, spec, record_failures=record_failures)
    log.info("%s", summary)
    return summary
