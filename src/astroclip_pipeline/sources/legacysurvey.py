"""Legacy Survey grz cutouts: the cutout service's URLs, its FITS answers, and resumable shards.

The service (https://www.legacysurvey.org/viewer/cutout.fits) answers one request per position
with one FITS image in the primary HDU: float32, (bands, size, size), nanomaggies, TAN WCS, cards
``BANDS='grz'`` and ``BAND0..2``. A position outside the footprint comes back as an all-zero image.

:func:`download_cutout_shard` fetches one shard of targets, one request per target, and writes
the raw-shard files of ``shards.py``. Each finished target is kept at once in a sidecar directory
(``cutouts/.partial-{i}/``: one ``{TARGETID}.npy`` per image, one ``{TARGETID}.missing`` per target
the survey cannot deliver), each written atomically, so that a job killed half-way resumes with
the targets it had not finished; the shard files appear only when every target is accounted for.
"""

from __future__ import annotations

import io
import logging
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from astropy.io import fits
from tqdm.auto import tqdm

from ..files import atomic_path
from .http import DownloadError, Fetcher, HTTPStatusError, PayloadError
from .shards import MISSING_COLUMNS, CutoutShard, write_cutout_shard, write_missing

log = logging.getLogger(__name__)

CUTOUT_SERVICE = "https://www.legacysurvey.org/viewer/cutout.fits"
SOURCE_NAME = "legacysurvey"

# Reasons written to missing-{i}.csv.
OUT_OF_FOOTPRINT = "out_of_footprint"
NON_FINITE = "non_finite"
DOWNLOAD_FAILED = "download_failed"


@dataclass(frozen=True)
class CutoutSpec:
    """What to ask the cutout service for (the defaults are AstroCLIP's / Stein et al.'s cutouts)."""

    layer: str = "ls-dr9"
    pixscale: float = 0.262
    bands: str = "grz"
    size: int = 152
    service: str = CUTOUT_SERVICE


class CutoutError(PayloadError):
    """A cutout answer that is not the FITS image asked for (HTML, truncated, wrong shape...)."""


class NonFiniteCutoutError(ValueError):
    """A well-formed cutout with NaN or infinite pixels: the survey cannot deliver this target."""


class IncompleteShardError(RuntimeError):
    """Some targets of a shard failed to download; the finished ones are kept for the rerun."""


def cutout_url(ra: float, dec: float, spec: CutoutSpec = CutoutSpec()) -> str:
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise ValueError(f"cutout position ra={ra}, dec={dec} is outside 0 <= ra < 360, -90 <= dec <= 90")
    # 10 decimals of a degree is 0.04 mas: the URL never moves the cutout's centre.
    query = {
        "ra": f"{ra:.10f}",
        "dec": f"{dec:.10f}",
        "layer": spec.layer,
        "pixscale": f"{spec.pixscale:g}",
        "bands": spec.bands,
        "size": str(spec.size),
    }
    return f"{spec.service}?{urlencode(query)}"


def parse_cutout(data: bytes | str | Path, bands: str = "grz", size: int = 152) -> np.ndarray:
    """The image of one cutout answer as native float32 (bands, size, size); CutoutError if malformed.

    Checks what a wrong answer looks like: an HTML page, a body too short for the image its header
    announces, no image in the primary HDU, another shape, or a ``BANDS`` card naming other bands.
    """
    name = str(data) if isinstance(data, str | Path) else "cutout response"
    raw = Path(data).read_bytes() if isinstance(data, str | Path) else bytes(data)
    if raw[:1] == b"<" or raw.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        raise CutoutError(f"{name}: got an HTML page, not a FITS image: {raw[:120]!r}")
    if not raw.startswith(b"SIMPLE  ="):
        raise CutoutError(f"{name}: not a FITS file (starts with {raw[:20]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy only warns about a truncated file
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                header = hdul[0].header
                expected_shape = (len(bands), size, size)
                shape = tuple(header.get(f"NAXIS{k}", 0) for k in range(header.get("NAXIS", 0), 0, -1))
                if shape != expected_shape:
                    raise CutoutError(f"{name}: primary HDU has shape {shape}, expected {expected_shape}")
                needed = hdul.fileinfo(0)["datLoc"] + abs(header["BITPIX"]) // 8 * int(np.prod(shape))
                if len(raw) < needed:
                    raise CutoutError(f"{name}: truncated: {len(raw)} bytes, the image needs {needed}")
                if "BANDS" in header and str(header["BANDS"]).strip() != bands:
                    raise CutoutError(f"{name}: BANDS={header['BANDS']!r}, expected {bands!r}")
                image = np.asarray(hdul[0].data, dtype=np.float32)
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError, KeyError, Warning) as err:
        raise CutoutError(f"{name}: unreadable FITS: {err}") from err
    return np.ascontiguousarray(image, dtype=np.float32)  # big-endian FITS -> native byte order


def read_cutout_fits(data: bytes | str | Path, bands: str = "grz", size: int = 152) -> np.ndarray:
    """A validated cutout in nanomaggies: float32 (bands, size, size), every pixel finite.

    ``data`` is the response body or a path to a saved ``.fits``. Raises :class:`CutoutError` for a
    malformed answer and :class:`NonFiniteCutoutError` for NaN/inf pixels.
    """
    image = parse_cutout(data, bands, size)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise NonFiniteCutoutError(f"cutout has {bad} non-finite pixel(s) of {image.size}")
    return image


def is_out_of_footprint(image: np.ndarray) -> bool:
    """True for the all-zero image the service returns for a position it has no data for."""
    return not np.any(image)


@dataclass
class ShardSummary:
    """What one call of :func:`download_cutout_shard` did."""

    shard: int
    targets: int
    downloaded: int = 0
    resumed: int = 0
    missing: Counter = field(default_factory=Counter)
    failed: int = 0
    already_done: bool = False

    def __str__(self) -> str:
        if self.already_done:
            return f"cutout shard {self.shard}: already finished, nothing downloaded"
        missing = ", ".join(f"{reason} {n}" for reason, n in sorted(self.missing.items())) or "none"
        return (
            f"cutout shard {self.shard}: {self.targets} targets, {self.downloaded} downloaded, "
            f"{self.resumed} kept from an earlier run, missing: {missing}, failed: {self.failed}"
        )


def cutout_shard_paths(out_dir: str | Path, shard_index: int) -> tuple[Path, Path, Path]:
    """(shard file, missing list, sidecar directory) of one cutout shard under ``out_dir``."""
    out_dir = Path(out_dir)
    return (
        out_dir / f"shard-{shard_index}.h5",
        out_dir / f"missing-{shard_index}.csv",
        out_dir / f".partial-{shard_index}",
    )


def download_cutout_shard(
    targets: pd.DataFrame,
    shard_index: int,
    out_dir: str | Path,
    fetcher: Fetcher,
    spec: CutoutSpec = CutoutSpec(),
    *,
    shard_column: str = "SHARD",
    record_failures: bool = False,
    progress: bool = True,
) -> ShardSummary:
    """Fetch the cutouts of one shard and write ``shard-{i}.h5`` and ``missing-{i}.csv`` in ``out_dir``.

    ``targets`` holds TARGETID, RA, DEC and ``shard_column``; the shard keeps the targets' order.
    A target the survey cannot deliver (out of footprint, non-finite pixels, a final HTTP 4xx) is
    listed in the missing file with its reason. A target whose download still fails after every
    retry stops the shard with :class:`IncompleteShardError` (the finished targets stay in the
    sidecar for the rerun) unless ``record_failures`` lists it as ``download_failed`` instead.
    A shard whose two files exist is skipped.
    """
    shard_path, missing_path, sidecar = cutout_shard_paths(out_dir, shard_index)
    rows = _shard_rows(targets, shard_index, shard_column)
    summary = ShardSummary(shard_index, len(rows))
    if shard_path.exists() and missing_path.exists():
        summary.already_done = True
        log.info("%s", summary)
        return summary

    sidecar.mkdir(parents=True, exist_ok=True)
    done = _finished_targets(sidecar)
    pending = rows[~rows.TARGETID.isin(done)]
    summary.resumed = len(rows) - len(pending)
    positions = {int(row.TARGETID): (float(row.RA), float(row.DEC)) for row in pending.itertuples()}

    def fetch_one(targetid: int) -> str | None:
        return _fetch_target(fetcher, spec, targetid, *positions[targetid], sidecar)

    failures: dict[int, str] = {}
    with tqdm(
        total=len(rows),
        initial=summary.resumed,
        desc=f"cutouts shard {shard_index}",
        unit="cutout",
        disable=not progress,
    ) as bar:
        for outcome in fetcher.map(fetch_one, positions):
            bar.update(1)
            if outcome.error is None:
                summary.downloaded += outcome.result is None
            elif isinstance(outcome.error, DownloadError):
                failures[outcome.key] = str(outcome.error)
            else:
                raise outcome.error
    if failures and not record_failures:
        summary.failed = len(failures)
        log.error("%s", summary)
        raise IncompleteShardError(
            f"cutout shard {shard_index}: {len(failures)} of {len(rows)} target(s) failed to download "
            f"(the others are kept in {sidecar} for the rerun); first: {next(iter(failures.values()))}"
        )
    for targetid, message in failures.items():
        _write_text(sidecar / f"{targetid}.missing", f"{DOWNLOAD_FAILED}: {message}")

    images, missing = _collect(rows, sidecar, spec)
    summary.missing = Counter(reason.split(":")[0] for reason in missing.reason)
    write_missing(missing_path, missing)
    # The shard file is written last: its presence (with the missing list) marks the shard finished.
    write_cutout_shard(shard_path, images, SOURCE_NAME)
    shutil.rmtree(sidecar)
    log.info("%s", summary)
    return summary


def _shard_rows(targets: pd.DataFrame, shard_index: int, shard_column: str) -> pd.DataFrame:
    absent = [c for c in ("TARGETID", "RA", "DEC", shard_column) if c not in targets.columns]
    if absent:
        raise KeyError(f"targets table lacks column(s) {absent}; it needs TARGETID, RA, DEC, {shard_column}")
    rows = targets.loc[targets[shard_column] == shard_index, ["TARGETID", "RA", "DEC"]].reset_index(drop=True)
    if rows.empty:
        present = sorted(set(targets[shard_column]))
        raise ValueError(f"no targets in shard {shard_index}; column {shard_column} holds {present[:10]}")
    if rows.TARGETID.duplicated().any():
        raise ValueError(
            f"shard {shard_index}: duplicated TARGETID(s) {rows.TARGETID[rows.TARGETID.duplicated()].tolist()[:5]}"
        )
    return rows


def _finished_targets(sidecar: Path) -> set[int]:
    # Only complete files count: atomic_path's temporary names start with a dot.
    return {int(p.stem) for p in sidecar.iterdir() if p.suffix in (".npy", ".missing") and not p.name.startswith(".")}


def _fetch_target(
    fetcher: Fetcher, spec: CutoutSpec, targetid: int, ra: float, dec: float, sidecar: Path
) -> str | None:
    """Download one cutout into the sidecar; return the reason it is missing, or None."""
    try:
        body = fetcher.get(cutout_url(ra, dec, spec), validate=lambda b, _: parse_cutout(b, spec.bands, spec.size))
    except HTTPStatusError as err:
        reason = f"http_{err.status}"
    else:
        try:
            image = read_cutout_fits(body.content, spec.bands, spec.size)
        except NonFiniteCutoutError as err:
            reason = f"{NON_FINITE}: {err}"
        else:
            if not is_out_of_footprint(image):
                with atomic_path(sidecar / f"{targetid}.npy") as tmp, open(tmp, "wb") as out:
                    np.save(out, image)
                return None
            reason = OUT_OF_FOOTPRINT
    _write_text(sidecar / f"{targetid}.missing", reason)
    return reason


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _collect(rows: pd.DataFrame, sidecar: Path, spec: CutoutSpec) -> tuple[CutoutShard, pd.DataFrame]:
    """The shard's images and missing list from the sidecar, in the targets' order."""
    kept, images, missing = [], [], []
    for targetid in rows.TARGETID.astype(np.int64):
        image_path, missing_file = sidecar / f"{targetid}.npy", sidecar / f"{targetid}.missing"
        if image_path.exists():
            kept.append(targetid)
            images.append(np.load(image_path))
        elif missing_file.exists():
            missing.append((targetid, missing_file.read_text().strip()))
        else:
            raise RuntimeError(f"{sidecar}: target {targetid} has neither an image nor a missing reason")
    shape = (0, len(spec.bands), spec.size, spec.size)
    stack = np.stack(images).astype(np.float32) if images else np.zeros(shape, np.float32)
    shard = CutoutShard(np.asarray(kept, dtype=np.int64), stack, spec.bands, spec.pixscale)
    return shard, pd.DataFrame(missing, columns=MISSING_COLUMNS)
