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

from .desi import N_PIXELS, wavelength_grid
from .http import Fetcher, PayloadError
from .shards import MISSING_COLUMNS, SpectraShard, write_missing, write_spectra_shard

log = logging.getLogger(__name__)

SPARCL_URL = "https://astrosparcl.datalab.noirlab.edu"
DATASET = "DESI-EDR"
#: The API major version this module was written against (sparclclient 1.3.1's KNOWN_GOOD_API_VERSION).
KNOWN_API_VERSION = 14.2
#: sparclclient's hard cap on the records of one retrieve.
MAX_RECORDS_PER_CALL = 24_000
SPECTRUM_FIELDS = ("flux", "ivar", "mask", "wavelength")
SOURCE_NAME = "sparcl"
NOT_IN_SPARCL = "not_in_sparcl"


class SparclError(RuntimeError):
    """The SPARCL service answered something this module cannot use."""


@dataclass
class SparclSpectra:
    targetid: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    missing: list[int] = field(default_factory=list)


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
    service: SparclService, targetids: Sequence[int], batch_size: int = 500, progress=None
) -> SparclSpectra:
    """DESI spectra of ``targetids`` on the 7781-pixel grid, in their order; absent ones listed.

    Each batch is one find and one retrieve call, as ``retrieve_by_specid`` makes them. A record
    whose wavelength array is not the DESI grid raises: SPARCL is expected to serve the
    b/r/z-combined coadd, and resampling here would hide a change on its side.
    """
    if not 0 < batch_size <= MAX_RECORDS_PER_CALL:
        raise ValueError(f"batch_size must be in 1..{MAX_RECORDS_PER_CALL}, got {batch_size}")
    targetids = [int(t) for t in targetids]
    by_id: dict[int, dict] = {}
    for start in range(0, len(targetids), batch_size):
        batch = targetids[start : start + batch_size]
        ids = service.find_ids(batch)
        if ids:
            for record in service.retrieve(ids, SPECTRUM_FIELDS):
                _keep_record(by_id, record, service.api)
        if progress is not None:
            progress.update(len(batch))
    kept = [t for t in targetids if t in by_id]
    grid = wavelength_grid()
    arrays = {name: np.zeros((len(kept), N_PIXELS), np.float32) for name in ("flux", "ivar")}
    mask = np.zeros((len(kept), N_PIXELS), np.uint32)
    for row, targetid in enumerate(kept):
        record = by_id[targetid]
        _check_record_grid(record, grid, service.api)
        arrays["flux"][row] = record["flux"]
        arrays["ivar"][row] = record["ivar"]
        mask[row] = np.asarray(record["mask"]).astype(np.int64) & 0xFFFFFFFF
    missing = [t for t in targetids if t not in by_id]
    return SparclSpectra(np.asarray(kept, np.int64), grid, arrays["flux"], arrays["ivar"], mask, missing)


def write_sparcl_spectra_shard(
    targetids: Sequence[int],
    spectra_path: str | Path,
    missing_path: str | Path,
    service: SparclService,
    batch_size: int = 500,
) -> SparclSpectra:
    """Fetch one shard's spectra and write its raw-shard files (``shards.py``)."""
    spectra = retrieve_spectra(service, targetids, batch_size)
    shard = SpectraShard(spectra.targetid, spectra.wavelength, spectra.flux, spectra.ivar, spectra.mask)
    write_missing(
        missing_path, pd.DataFrame({"TARGETID": spectra.missing, "reason": NOT_IN_SPARCL}, columns=MISSING_COLUMNS)
    )
    write_spectra_shard(spectra_path, shard, SOURCE_NAME)
    log.info("SPARCL: %d spectra, %d not in SPARCL -> %s", len(spectra.targetid), len(spectra.missing), spectra_path)
    return spectra


def _keep_record(by_id: dict[int, dict], record: dict, api: str) -> None:
    try:
        targetid = int(record["specid"])
    except (KeyError, TypeError, ValueError):
        raise SparclError(f"{api}/spectras/: a record has no usable specid: keys {sorted(record)}") from None
    if targetid in by_id:
        raise SparclError(f"{api}/spectras/: more than one {DATASET} record for TARGETID {targetid}")
    by_id[targetid] = record


def _check_record_grid(record: dict, grid: np.ndarray, api: str) -> None:
    absent = [f for f in SPECTRUM_FIELDS if f not in record]
    if absent:
        raise SparclError(f"{api}/spectras/: record of TARGETID {record.get('specid')} lacks {absent}")
    wave = np.asarray(record["wavelength"], dtype=np.float64)
    if wave.shape != grid.shape or np.max(np.abs(wave - grid)) > 1e-3:
        raise SparclError(
            f"{api}/spectras/: TARGETID {record.get('specid')} has {wave.size} wavelengths "
            f"({wave.min() if wave.size else 'none'}-{wave.max() if wave.size else 'none'} Å), "
            f"expected the DESI grid ({grid.size} pixels, {grid[0]}-{grid[-1]} Å)"
        )


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
