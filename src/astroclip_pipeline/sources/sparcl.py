"""DESI EDR spectra from NOIRLab's SPARCL service, by TARGETID, in batches.

This speaks the HTTP protocol of ``sparclclient`` 1.3.1 (read from the wheel on PyPI; the
project does not install the client, whose pins conflict with numpy 2.4 / pandas 3):

- ``GET {url}/api/version/`` -> the server API version as text (the client expects 14.x);
- ``GET {url}/api/datafields/`` -> JSON list of ``{"data_release", "origdp", "newdp", "storage",
  "default", "all"}``: ``newdp`` is the science name a user writes, ``origdp`` the internal name
  the server's queries use, per data set;
- ``retrieve_by_specid(specids, dataset_list=["DESI-EDR"])`` is two calls:
  ``POST {url}/api/find/?limit=N`` with JSON ``{"outfields": [<internal sparcl_id>], "search":
  [[<internal specid>, id, id, ...], [<internal data_release>, "DESI-EDR"]]}`` -> JSON list whose
  first element is a header and the rest records ``{<internal sparcl_id>: ..., "_dr": ...}``;
  then ``POST {url}/api/spectras/?include=<internal names, comma-joined>&format=pkl&dataset_list=DESI-EDR``
  with the JSON list of sparcl_ids -> a pickle of ``[header, record, ...]``, records keyed by
  internal names plus ``_dr``, spectra as numpy arrays; the header's ``status.warnings`` says
  which ids had no record.
- the client caps one retrieve at 24,000 records (``MAX_NUM_RECORDS_RETRIEVED``) and its
  ``limit`` defaults to 500, the batch size AstroCLIP used.

One TARGETID can have several DESI-EDR records: a target observed in more than one survey or
program (sv1, sv3, special...) has one healpix coadd, hence one SPARCL record, per (survey,
program). The record used is that of the spectrum target selection chose: its ``survey``,
``program`` and ``healpix`` fields (those of :data:`IDENTITY_FIELDS` that the data set's
``/api/datafields/`` lists) must equal the target's SURVEY, PROGRAM and HEALPIX. A target whose
chosen record cannot be told apart, or is absent, or is unusable (off the DESI grid, fields
missing, no valid pixel) is listed as missing with its reason; the rest of the shard goes on.

The pickle is the server's own format; since unpickling runs code named in the stream, it is
read here with an unpickler that only rebuilds numpy arrays and plain containers.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from .desi import N_PIXELS, flag_invalid_pixels, wavelength_grid
from .http import Fetcher, PayloadError
from .shards import MISSING_COLUMNS, SpectraShard, write_spectra_files

log = logging.getLogger(__name__)

SPARCL_URL = "https://astrosparcl.datalab.noirlab.edu"
DATASET = "DESI-EDR"
#: The API major version this module was written against (sparclclient 1.3.1's KNOWN_GOOD_API_VERSION).
KNOWN_API_VERSION = 14.2
#: sparclclient's hard cap on the records of one retrieve.
MAX_RECORDS_PER_CALL = 24_000
SPECTRUM_FIELDS = ("flux", "ivar", "mask", "wavelength")
SOURCE_NAME = "sparcl"
#: Fields of a DESI record that say which coadd it comes from -> the targets' column they must equal.
IDENTITY_FIELDS = {"survey": "SURVEY", "program": "PROGRAM", "healpix": "HEALPIX"}
# Reasons written to missing-{i}.csv.
NOT_IN_SPARCL = "not_in_sparcl"
SELECTED_SPECTRUM_NOT_IN_SPARCL = "selected_spectrum_not_in_sparcl"
SEVERAL_SPARCL_RECORDS = "several_sparcl_records"
UNUSABLE_SPARCL_RECORD = "unusable_sparcl_record"


class SparclError(RuntimeError):
    """The SPARCL service answered something this module cannot use."""


@dataclass
class SparclSpectra:
    """Spectra on the DESI grid, rows in the order asked; ``missing`` is (TARGETID, reason) pairs."""

    targetid: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    missing: list[tuple[int, str]] = field(default_factory=list)


class SparclService:
    """The few SPARCL calls the pipeline needs, over a polite :class:`Fetcher`."""

    def __init__(self, fetcher: Fetcher, url: str = SPARCL_URL, dataset: str = DATASET):
        self.fetcher = fetcher
        self.api = f"{url.rstrip('/')}/api"
        self.dataset = dataset
        self._names: dict[str, str] | None = None

    def version(self) -> float:
        text = self.fetcher.get(f"{self.api}/version/").content.decode().strip().strip('"')
        try:
            return float(text)
        except ValueError:
            raise SparclError(f"{self.api}/version/: expected a version number, got {text[:80]!r}") from None

    def check_version(self) -> float:
        version = self.version()
        if int(version) != int(KNOWN_API_VERSION):
            raise SparclError(
                f"{self.api}: server API version {version}, this module speaks {KNOWN_API_VERSION}; "
                "check the protocol notes in sources/sparcl.py against the current sparclclient"
            )
        return version

    def internal_names(self) -> dict[str, str]:
        """Science name -> internal name for this data set (``/api/datafields/``), fetched once."""
        if self._names is None:
            body = self.fetcher.get(f"{self.api}/datafields/", validate=_json_validator).content
            fields = json.loads(body)
            self._names = {f["newdp"]: f["origdp"] for f in fields if f.get("data_release") == self.dataset}
            if not self._names:
                datasets = sorted({f.get("data_release") for f in fields})
                raise SparclError(f"{self.api}/datafields/: no fields for data set {self.dataset}; it has {datasets}")
        return self._names

    def _internal(self, science_name: str) -> str:
        names = self.internal_names()
        if science_name not in names:
            raise SparclError(
                f"{self.api}: data set {self.dataset} has no field {science_name!r}; it has {sorted(names)}"
            )
        return names[science_name]

    def find_ids(self, specids: Sequence[int]) -> list[str]:
        """sparcl_ids of the records of these specids (TARGETIDs for DESI) in the data set."""
        limit = min(MAX_RECORDS_PER_CALL, max(500, 2 * len(specids)))
        query = {
            "outfields": [self._internal("sparcl_id")],
            "search": [[self._internal("specid"), *map(int, specids)], [self._internal("data_release"), self.dataset]],
        }
        body = self.fetcher.post_json(
            f"{self.api}/find/?{urlencode({'limit': limit})}", query, validate=_json_validator
        ).content
        records = _records(json.loads(body), f"{self.api}/find/")
        key = self._internal("sparcl_id")
        return [r[key] for r in records]

    def retrieve(self, sparcl_ids: Sequence[str], include: Sequence[str]) -> list[dict]:
        """Records (science names) of these sparcl_ids with the ``include`` fields."""
        if len(sparcl_ids) > MAX_RECORDS_PER_CALL:
            raise ValueError(
                f"SPARCL retrieves at most {MAX_RECORDS_PER_CALL} records per call, asked {len(sparcl_ids)}"
            )
        names = self.internal_names()
        wanted = sorted({*include, "sparcl_id", "specid"})
        params = {"include": ",".join(self._internal(n) for n in wanted), "format": "pkl", "dataset_list": self.dataset}
        url = f"{self.api}/spectras/?{urlencode(params)}"
        body = self.fetcher.post_json(url, list(sparcl_ids), validate=_pickle_validator).content
        science = {internal: name for name, internal in names.items()}
        return [{science.get(k, k): v for k, v in r.items()} for r in _records(safe_unpickle(body), url)]


def retrieve_spectra(
    service: SparclService, targets: pd.DataFrame | Sequence[int], batch_size: int = 500, progress=None
) -> SparclSpectra:
    """DESI spectra of ``targets`` on the 7781-pixel grid, in their order; the others listed with a reason.

    ``targets`` is a table with TARGETID and, to choose among several records of one target,
    the columns of :data:`IDENTITY_FIELDS` (SURVEY, PROGRAM, HEALPIX), or just TARGETIDs. Each
    batch is one find and one retrieve call, as ``retrieve_by_specid`` makes them. A record
    whose wavelength array is not the DESI grid is unusable: SPARCL is expected to serve the
    b/r/z-combined coadd, and resampling here would hide a change on its side.
    """
    if not 0 < batch_size <= MAX_RECORDS_PER_CALL:
        raise ValueError(f"batch_size must be in 1..{MAX_RECORDS_PER_CALL}, got {batch_size}")
    if not isinstance(targets, pd.DataFrame):
        targets = pd.DataFrame({"TARGETID": [int(t) for t in targets]})
    available = service.internal_names()
    identity = {f: column for f, column in IDENTITY_FIELDS.items() if f in available and column in targets.columns}
    targetids = targets.TARGETID.astype(np.int64).tolist()
    records: dict[int, list[dict]] = {}
    for start in range(0, len(targetids), batch_size):
        batch = targetids[start : start + batch_size]
        ids = service.find_ids(batch)
        if ids:
            for record in service.retrieve(ids, (*SPECTRUM_FIELDS, *identity)):
                records.setdefault(_specid(record, service.api), []).append(record)
        if progress is not None:
            progress.update(len(batch))
    grid = wavelength_grid()
    chosen: dict[int, dict] = {}
    missing: list[tuple[int, str]] = []
    for row in targets.itertuples(index=False):
        targetid = int(row.TARGETID)
        wanted = {f: getattr(row, column) for f, column in identity.items()}
        record, reason = _choose_record(records.get(targetid, []), wanted)
        if record is not None:
            reason = _unusable(record, grid)
        if reason is None:
            chosen[targetid] = record
        else:
            log.warning("SPARCL: TARGETID %d is missing: %s", targetid, reason)
            missing.append((targetid, reason))
    kept = [t for t in targetids if t in chosen]
    flux = np.zeros((len(kept), N_PIXELS), np.float32)
    ivar = np.zeros((len(kept), N_PIXELS), np.float32)
    mask = np.zeros((len(kept), N_PIXELS), np.int64)
    for row, targetid in enumerate(kept):
        flux[row], ivar[row], mask[row] = (np.asarray(chosen[targetid][f]) for f in ("flux", "ivar", "mask"))
    # the same pixel rule as every source (desi.flag_invalid_pixels)
    flux, ivar, mask = flag_invalid_pixels(flux, ivar, mask)
    return SparclSpectra(np.asarray(kept, np.int64), grid, flux, ivar, mask, missing)


def write_sparcl_spectra_shard(
    targets: pd.DataFrame | Sequence[int],
    spectra_path: str | Path,
    missing_path: str | Path,
    service: SparclService,
    batch_size: int = 500,
) -> SparclSpectra:
    """Fetch one shard's spectra and write its raw-shard files (``shards.py``); see :func:`retrieve_spectra`."""
    spectra = retrieve_spectra(service, targets, batch_size)
    shard = SpectraShard(spectra.targetid, spectra.wavelength, spectra.flux, spectra.ivar, spectra.mask)
    missing = write_spectra_files(
        spectra_path, missing_path, shard, pd.DataFrame(spectra.missing, columns=MISSING_COLUMNS), SOURCE_NAME
    )
    n_targets = len(shard.targetid) + len(spectra.missing)
    log.info("SPARCL: %d targets, %d missing -> %s", n_targets, len(missing), spectra_path)
    return spectra


def _specid(record: dict, api: str) -> int:
    try:
        return int(record["specid"])
    except (KeyError, TypeError, ValueError):
        raise SparclError(f"{api}/spectras/: a record has no usable specid: keys {sorted(record)}") from None


def _same(value, wanted) -> bool:
    # SURVEY/PROGRAM are strings, HEALPIX an integer; SPARCL may give either as text.
    return str(value).strip().lower() == str(wanted).strip().lower()


def _choose_record(records: list[dict], wanted: dict) -> tuple[dict | None, str | None]:
    """The record of the selected spectrum among a target's records, or None and the reason."""
    if not records:
        return None, NOT_IN_SPARCL
    matching = [r for r in records if all(_same(r.get(f), v) for f, v in wanted.items())]
    if len(matching) == 1:
        return matching[0], None
    described = "; ".join(",".join(str(r.get(f)) for f in wanted) or str(r.get("sparcl_id")) for r in records)
    if not matching:
        return None, f"{SELECTED_SPECTRUM_NOT_IN_SPARCL}: selected {wanted}, SPARCL has {described}"
    how = f"matching {wanted}" if wanted else "and the data set has no survey/program/healpix field to choose by"
    return None, f"{SEVERAL_SPARCL_RECORDS}: {len(matching)} records {how} ({described})"


def _unusable(record: dict, grid: np.ndarray) -> str | None:
    """Why a record cannot give a spectrum on the DESI grid, or None."""
    absent = [f for f in SPECTRUM_FIELDS if f not in record]
    if absent:
        return f"{UNUSABLE_SPARCL_RECORD}: lacks {absent}"
    wave = np.asarray(record["wavelength"], dtype=np.float64)
    if wave.shape != grid.shape or not np.all(np.abs(wave - grid) <= 1e-3):
        span = f"{np.nanmin(wave)}-{np.nanmax(wave)} Å" if wave.size else "none"
        return (
            f"{UNUSABLE_SPARCL_RECORD}: {wave.size} wavelengths ({span}), "
            f"expected the DESI grid ({grid.size} pixels, {grid[0]}-{grid[-1]} Å)"
        )
    shapes = {f: np.shape(record[f]) for f in ("flux", "ivar", "mask")}
    if set(shapes.values()) != {grid.shape}:
        return f"{UNUSABLE_SPARCL_RECORD}: array shapes {shapes}, expected {grid.shape}"
    return None


def _records(payload, url: str) -> list[dict]:
    if not isinstance(payload, list) or not payload or not isinstance(payload[0], dict):
        raise SparclError(f"{url}: expected a list [header, record, ...], got {type(payload).__name__}")
    warnings = payload[0].get("status", {}).get("warnings", []) if isinstance(payload[0].get("status"), dict) else []
    for warning in warnings:
        log.warning("SPARCL: %s", warning)
    return payload[1:]


def _json_validator(body: bytes, headers) -> None:
    try:
        json.loads(body)
    except ValueError as err:
        raise PayloadError(f"not JSON: {body[:80]!r}") from err


def _pickle_validator(body: bytes, headers) -> None:
    if body[:1] != b"\x80":  # every pickle of protocol >= 2 starts with the PROTO opcode
        raise PayloadError(f"not a pickle: {body[:80]!r}")


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("numpy") and name.endswith("DType"):  # numpy 2 dtype classes
            return super().find_class(module, name)
        raise SparclError(f"SPARCL response pickle refers to {module}.{name}, which is not plain data; refused")


def safe_unpickle(body: bytes):
    """Load a SPARCL pickle, refusing anything but numpy arrays, scalars and builtin containers."""
    try:
        return _SafeUnpickler(io.BytesIO(body)).load()
    except SparclError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise SparclError(f"SPARCL response is not a readable pickle: {err}") from err
