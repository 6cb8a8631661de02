"""Legacy Survey cutouts: the cutout service's URLs, its FITS answers, and resumable shards.

The service (https://www.legacysurvey.org/viewer/cutout.fits) answers one request per position
with one FITS image in the primary HDU: float32, (bands, size, size), nanomaggies, TAN WCS, cards
``BANDS='grz'`` and ``BAND0..``. The layer is a config choice: ``ls-dr9`` (g, r, z; AstroCLIP's)
or ``ls-dr10`` (g, r, i, z; i only where DECam observed it). Planes are always picked by their
BAND cards, never by position, and stored in the order of ``CutoutSpec.bands``; the models read
g, r, z (``shards.MODEL_BANDS``) whatever else the layer delivers.

Where the survey has no data, the service fills pixels with 0 (a measured, sky-subtracted pixel
is never exactly 0). Each form of "no data" gets one rule (:func:`no_data_reason`):

- every band all zero: ``out_of_footprint``, the target is missing;
- a model band (g, r or z) all zero, or absent from the answer: ``no_data_in_band: z``, missing
  (a zero plane is not a measurement, and the models cannot read a grz image without it);
- another band (DR10's i) all zero or absent: kept, its plane 0 and its coverage 0;
- part of a band empty (the edge of the footprint, a CCD gap): kept and flagged: the dataset's
  ``COVERAGE_G/R/Z`` columns give each band's fraction of pixels with data (:func:`band_coverage`);
- an answer without an image (NAXIS = 0): ``no_image``, missing; NaN/inf pixels: ``non_finite``,
  missing; a final HTTP 4xx: ``http_{status}``, missing.

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
from .shards import MISSING_COLUMNS, MODEL_BANDS, CutoutShard, write_cutout_shard, write_missing

log = logging.getLogger(__name__)

CUTOUT_SERVICE = "https://www.legacysurvey.org/viewer/cutout.fits"
SOURCE_NAME = "legacysurvey"

# Reasons written to missing-{i}.csv.
OUT_OF_FOOTPRINT = "out_of_footprint"
NO_DATA_IN_BAND = "no_data_in_band"
NO_IMAGE = "no_image"
NON_FINITE = "non_finite"
UNEXPECTED_ANSWER = "unexpected_answer"
BAD_POSITION = "bad_position"
DOWNLOAD_FAILED = "download_failed"


@dataclass(frozen=True)
class CutoutSpec:
    """What to ask the cutout service for (the defaults are AstroCLIP's / Stein et al.'s cutouts)."""

    layer: str = "ls-dr9"
    pixscale: float = 0.262
    bands: str = "grz"
    size: int = 152
    service: str = CUTOUT_SERVICE

    def __post_init__(self):
        absent = [band for band in MODEL_BANDS if band not in self.bands]
        if absent or len(set(self.bands)) != len(self.bands):
            raise ValueError(
                f"cutout bands {self.bands!r}: each band once, and the models' {MODEL_BANDS!r} among them "
                f"(ls-dr9 has grz, ls-dr10 griz)"
            )


class CutoutError(PayloadError):
    """A cutout answer that is not the FITS image asked for (HTML, truncated, wrong shape...)."""


class NonFiniteCutoutError(ValueError):
    """A well-formed cutout with NaN or infinite pixels: the survey cannot deliver this target."""


class NoImageError(ValueError):
    """A well-formed FITS answer that holds no image (NAXIS = 0): no data at that position."""


class MissingBandError(ValueError):
    """A well-formed cutout without a plane for a band asked for; ``bands`` lists them."""

    def __init__(self, message: str, bands):
        super().__init__(message)
        self.bands = list(bands)


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


def parse_cutout(data: bytes | str | Path) -> tuple[np.ndarray, fits.Header]:
    """The primary image of one cutout answer as native float32 and its header; CutoutError if malformed.

    Checks what the FITS format promises and what a wrong answer looks like: an HTML page, a body
    too short for the image its header announces, an unreadable file. An image of NAXIS 0 (no
    data) comes back with shape (0, 0, 0); a 2-d image (one band) as (1, ny, nx).
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
                header = hdul[0].header.copy()
                naxis = header.get("NAXIS", 0)
                shape = tuple(header.get(f"NAXIS{k}", 0) for k in range(naxis, 0, -1))
                if naxis == 0 or hdul[0].data is None:
                    return np.zeros((0, 0, 0), np.float32), header
                if naxis not in (2, 3):
                    raise CutoutError(f"{name}: primary HDU has shape {shape}; a cutout is (bands, ny, nx) or (ny, nx)")
                needed = hdul.fileinfo(0)["datLoc"] + abs(header["BITPIX"]) // 8 * int(np.prod(shape))
                if len(raw) < needed:
                    raise CutoutError(f"{name}: truncated: {len(raw)} bytes, the image needs {needed}")
                image = np.asarray(hdul[0].data, dtype=np.float32).reshape((-1, *shape[-2:]))
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError, KeyError, Warning) as err:
        raise CutoutError(f"{name}: unreadable FITS: {err}") from err
    unit = str(header.get("BUNIT", "nanomaggy")).strip().lower()
    if unit not in ("nanomaggy", "nanomaggies", "nmgy"):
        raise CutoutError(f"{name}: BUNIT={header['BUNIT']!r}; a Legacy Survey cutout is in nanomaggies")
    return np.ascontiguousarray(image, dtype=np.float32), header  # big-endian FITS -> native byte order


def cutout_bands(header: fits.Header, n_planes: int, name: str = "cutout") -> str:
    """The band of each plane, from the ``BAND0``, ``BAND1``... cards (else the ``BANDS`` card)."""
    cards = [str(header.get(f"BAND{k}", "")).strip() for k in range(n_planes)]
    if all(cards):
        return "".join(cards)
    bands = str(header.get("BANDS", "")).strip()
    if len(bands) == n_planes:
        return bands
    raise CutoutError(f"{name}: {n_planes} plane(s) but no BAND0..{n_planes - 1} cards or BANDS card naming them")


def read_cutout_fits(data: bytes | str | Path, bands: str | None = None, size: int | None = None) -> np.ndarray:
    """A cutout in nanomaggies: float32 (n_bands, ny, nx), every pixel finite.

    ``data`` is the response body or a path to a saved ``.fits``; any valid cutout is read as it
    is (its bands in file order). Only when asked, the pipeline's expectations are checked:
    ``bands`` selects and orders the planes by their BAND cards, never by position, and raises
    :class:`MissingBandError` naming a band the file does not hold; ``size`` raises
    :class:`CutoutError` for another image size. Raises :class:`CutoutError` for a malformed
    answer, :class:`NoImageError` for an answer without an image, :class:`NonFiniteCutoutError`
    for NaN/inf pixels.
    """
    name = str(data) if isinstance(data, str | Path) else "cutout response"
    image, header = parse_cutout(data)
    if image.size == 0:
        raise NoImageError(f"{name}: the answer holds no image (NAXIS = {header.get('NAXIS', 0)})")
    if bands is not None:
        held = cutout_bands(header, len(image), name)
        absent = [band for band in bands if band not in held]
        if absent:
            raise MissingBandError(f"{name}: no {','.join(absent)} plane; the file holds bands {held!r}", absent)
        image = image[[held.index(band) for band in bands]]
    if size is not None and image.shape[1:] != (size, size):
        raise CutoutError(f"{name}: image is {image.shape[1:]}, expected {(size, size)}")
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise NonFiniteCutoutError(f"{name}: {bad} non-finite pixel(s) of {image.size}")
    return image


def band_coverage(image: np.ndarray) -> np.ndarray:
    """Fraction of pixels with data per band of (..., n_bands, ny, nx): the service fills 0 where
    no exposure covers a pixel, and a measured sky-subtracted pixel is never exactly 0."""
    image = np.asarray(image)
    return np.count_nonzero(image, axis=(-2, -1)) / float(image.shape[-1] * image.shape[-2])


def is_out_of_footprint(image: np.ndarray) -> bool:
    """True for the all-zero image the service returns for a position it has no data for."""
    return not np.any(image)


def no_data_reason(image: np.ndarray, bands: str, required: str = MODEL_BANDS) -> str | None:
    """Why a cutout is not a measurement of the target, or None when it is (see the module docstring)."""
    if is_out_of_footprint(image):
        return OUT_OF_FOOTPRINT
    coverage = band_coverage(image)
    empty = [band for band, fraction in zip(bands, coverage, strict=True) if fraction == 0 and band in required]
    return f"{NO_DATA_IN_BAND}: {','.join(empty)}" if empty else None


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
    A target the survey cannot deliver (each form of "no data" in the module docstring,
    non-finite pixels, a position off the sky, a final HTTP 4xx) is listed in the missing file
    with its reason. A target whose download still fails after every
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
        url = cutout_url(ra, dec, spec)
    except ValueError as err:
        reason = f"{BAD_POSITION}: {err}"
    else:
        try:
            # Only a malformed answer (HTML, truncated...) is retried; a valid FITS file that says
            # "no data" is the survey's final answer for this position.
            body = fetcher.get(url, validate=lambda b, _: parse_cutout(b))
        except HTTPStatusError as err:
            reason = f"http_{err.status}"
        else:
            image, reason = _answer_image(body.content, spec)
            if reason is None:
                with atomic_path(sidecar / f"{targetid}.npy") as tmp, open(tmp, "wb") as out:
                    np.save(out, image)
                return None
    _write_text(sidecar / f"{targetid}.missing", reason)
    return reason


def _answer_image(body: bytes, spec: CutoutSpec) -> tuple[np.ndarray | None, str | None]:
    """The answer's image in ``spec.bands`` order, or None and why the target is missing."""
    try:
        image = read_cutout_fits(body, spec.bands, spec.size)
    except MissingBandError as err:
        required = [band for band in err.bands if band in MODEL_BANDS]
        if required:
            return None, f"{NO_DATA_IN_BAND}: {','.join(required)} (not in the answer)"
        # A band the models do not read is kept as an empty plane, as the service fills no data.
        held = [band for band in spec.bands if band not in err.bands]
        try:
            partial = read_cutout_fits(body, "".join(held), spec.size)
        except (CutoutError, NonFiniteCutoutError) as inner:
            return None, _reason_of(inner)
        image = np.zeros((len(spec.bands), spec.size, spec.size), np.float32)
        image[[spec.bands.index(band) for band in held]] = partial
    except (CutoutError, NonFiniteCutoutError, NoImageError) as err:
        return None, _reason_of(err)
    reason = no_data_reason(image, spec.bands)
    return (image, None) if reason is None else (None, reason)


def _reason_of(err: Exception) -> str:
    if isinstance(err, NonFiniteCutoutError):
        return f"{NON_FINITE}: {err}"
    if isinstance(err, NoImageError):
        return NO_IMAGE
    return f"{UNEXPECTED_ANSWER}: {err}"


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
