"""A loopback stand-in for the survey services, with fault injection, for offline download tests.

:class:`LoopbackServer` is a threaded ``http.server`` on 127.0.0.1 (a random free port) that
answers in the services' real formats, generated on the fly:

- ``GET /viewer/cutout.fits?ra=..&dec=..&bands=grz&size=N``: a Legacy Survey cutout, one FITS
  primary HDU of big-endian float32 (bands, size, size) in nanomaggies with a TAN WCS and BANDS /
  BAND0.. cards. The position says where the survey has no data (:func:`make_cutout`,
  :func:`cutout_fits_bytes`): outside the footprint, no z, half empty, an image-less answer, an
  answer without z; DEC > 85 gives NaN pixels.
- ``GET /files/<path>``: any bytes registered with :meth:`LoopbackServer.add_file` (DESI coadds in
  the archive layout, a PROVABGS HDF5), honouring ``Range: bytes=N-`` and ``bytes=N-M`` with 206 / 416.
- ``/sparcl/api/{version,datafields,find,spectras}/``: the SPARCL protocol of sparclclient 1.3.1
  (see ``sources/sparcl.py``), over records registered with :meth:`LoopbackServer.add_sparcl`.
- ``HEAD`` and ``GET /{owner}/{repo}/resolve/{revision}/{file}``: the Hugging Face hub's download
  URLs as ``huggingface_hub`` reads them (``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``;
  ``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound), over files registered with
  :meth:`LoopbackServer.add_hub_file`; faults apply to the GETs only.

Faults are queued per route with :meth:`LoopbackServer.inject` and each is consumed by the next
request to that route: ``status`` (e.g. 429 + Retry-After, 500, 503, 404), ``drop`` (headers
promise the whole body, half is sent, the connection is closed), ``truncate`` (a consistent HTTP
answer whose body is cut short), ``html`` (an HTML page with status 200), ``slow`` (answer after
``delay`` seconds), ``ignore_range`` (answer 200 with the whole file to a Range request).

The module also builds the files the services hold: :func:`make_cutout`, :func:`make_coadd_fits`,
:func:`make_provabgs_hdf5`, :func:`make_sparcl_record`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import socket
import threading
import time
import warnings
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io import fits
from astropy.table import Table

ARM_GRIDS = {"b": (3600.0, 2751), "r": (5760.0, 2326), "z": (7520.0, 2881)}
PIXSCALE_DEG = 0.262 / 3600


# -- the data the services hold --------------------------------------------------------------------


def make_cutout(ra: float, dec: float, bands: str = "grz", size: int = 152) -> np.ndarray:
    """The cutout at (ra, dec) in nanomaggies: noise plus a galaxy-like blob, each band's plane fixed
    by the position and the band. Where the survey has no data the planes are 0, by position:

    - DEC < -80: every band (outside the footprint);
    - -80 <= DEC < -75: the z band (no z exposure there);
    - -75 <= DEC < -70: the left half of every band (the edge of the footprint);
    - DEC > 30: the i band (DR10's i covers only part of the sky);
    - DEC > 85: one NaN pixel in the first band.
    """
    if dec < -80:
        return np.zeros((len(bands), size, size), np.float32)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    blob = np.exp(-(xx**2 + yy**2) / (2 * (size / 12) ** 2))
    planes = []
    for band in bands:
        rng = np.random.default_rng(zlib.crc32(f"{ra:.10f},{dec:.10f},{band},{size}".encode()))
        plane = rng.uniform(0.05, 1.0) * blob + rng.normal(0, 0.01, (size, size))
        if (band == "z" and -80 <= dec < -75) or (band == "i" and dec > 30):
            plane[:] = 0
        if -75 <= dec < -70:
            plane[:, : size // 2] = 0
        planes.append(plane)
    image = np.stack(planes)
    if dec > 85:
        image[0, 0, 0] = np.nan
    return image.astype(np.float32)


def cutout_fits_bytes(
    ra: float, dec: float, bands: str = "grz", size: int = 152, layer: str = "ls-dr9", order: str | None = None
) -> bytes:
    """The service's FITS answer. ``order`` writes the planes in another band order (the BAND cards
    follow), as a reader must select planes by their cards. By position, the answers that hold no
    data in another way: -70 <= DEC < -65 an image-less FITS file (NAXIS 0), -65 <= DEC < -60 an
    answer without the z plane."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = ra, dec
    header["CRPIX1"] = header["CRPIX2"] = (size + 1) / 2
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -PIXSCALE_DEG, 0.0, 0.0, PIXSCALE_DEG
    header["SURVEY"], header["VERSION"] = "LegacySurvey", layer.removeprefix("ls-").upper()
    buffer = io.BytesIO()
    if -70 <= dec < -65:
        fits.PrimaryHDU(header=header).writeto(buffer)
        return buffer.getvalue()
    written = "".join(b for b in (order or bands) if b in bands and not (b == "z" and -65 <= dec < -60))
    image = make_cutout(ra, dec, bands, size)[[bands.index(b) for b in written]]
    header["BANDS"] = written
    for k, band in enumerate(written):
        header[f"BAND{k}"] = band
    fits.PrimaryHDU(image, header=header).writeto(buffer)
    return buffer.getvalue()


def arm_wavelengths(arm: str) -> np.ndarray:
    start, n = ARM_GRIDS[arm]
    return start + 0.8 * np.arange(n)


def make_coadd_fits(targetids, seed: int = 0, mask_dtype=np.uint32, n_diag: int = 11) -> bytes:
    """A DESI healpix coadd in the real HDU layout for these TARGETIDs, plus one unassigned fibre
    (negative TARGETID, zero flux) and one SKY fibre. Masks set bit 31 in a few pixels (so a uint32
    mask must survive FITS's int32 + BZERO storage) and mask some overlap pixels in one arm."""
    rng = np.random.default_rng(seed)
    ids = np.array([*map(int, targetids), -1234, 5_000_000_000], dtype=np.int64)
    n = len(ids)
    fibermap = Table(
        {
            "TARGETID": ids,
            "COADD_FIBERSTATUS": np.zeros(n, np.int32),
            "TARGET_RA": rng.uniform(0, 360, n),
            "TARGET_DEC": rng.uniform(-10, 60, n),
            "OBJTYPE": np.array(["TGT"] * (n - 2) + ["TGT", "SKY"]),
        }
    )
    exp_fibermap = Table({"TARGETID": np.repeat(ids, 2), "EXPID": np.arange(2 * n, dtype=np.int32)})
    hdus = [
        fits.PrimaryHDU(),
        fits.BinTableHDU(fibermap, name="FIBERMAP"),
        fits.BinTableHDU(exp_fibermap, name="EXP_FIBERMAP"),
    ]
    high_bit = (1 << 31) if np.dtype(mask_dtype) == np.uint32 else 4
    for arm in "brz":
        wave = arm_wavelengths(arm)
        flux = (rng.normal(1.0, 0.3, (n, len(wave))) + np.linspace(0, 1, len(wave))).astype(np.float32)
        ivar = rng.uniform(0.5, 4.0, (n, len(wave))).astype(np.float32)
        mask = np.zeros((n, len(wave)), mask_dtype)
        mask[:, rng.integers(0, len(wave), 5)] = high_bit
        if arm == "b":
            mask[0, -10:] = 2  # masked in b inside the b/r overlap: r alone must fill these pixels
        flux[-2], ivar[-2] = 0, 0  # the unassigned fibre
        resolution = rng.uniform(0, 1, (n, n_diag, len(wave))).astype(np.float32)
        name = arm.upper()
        hdus.append(fits.ImageHDU(wave, name=f"{name}_WAVELENGTH"))
        hdus.append(fits.ImageHDU(flux, name=f"{name}_FLUX"))
        hdus[-1].header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom)"
        hdus.append(fits.ImageHDU(ivar, name=f"{name}_IVAR"))
        hdus.append(fits.ImageHDU(mask, name=f"{name}_MASK"))
        hdus.append(fits.ImageHDU(resolution, name=f"{name}_RESOLUTION"))
    hdus.append(fits.BinTableHDU(Table({"TARGETID": ids, "TSNR2_BGS": rng.uniform(0, 1, n)}), name="SCORES"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def make_provabgs_hdf5(path: Path, targetids, seed: int = 0, n_samples: int = 100, masked: dict | None = None) -> Path:
    """A PROVABGS-format catalogue: an astropy HDF5 table with the columns of the EDR VAC.
    ``masked`` maps column names to the boolean masks its entries get (written as astropy
    writes masked columns: ``serialize_meta=True``, a ``<name>.mask`` field beside the data)."""
    rng = np.random.default_rng(seed)
    n = len(targetids)
    logm = rng.uniform(8.5, 11.5, n)
    table = Table(
        {
            "TARGETID": np.asarray(targetids, np.int64),
            "RA": rng.uniform(0, 360, n),
            "DEC": rng.uniform(-10, 60, n),
            "Z_HP": rng.uniform(0.01, 0.5, n),
            "ZERR": rng.uniform(1e-5, 1e-4, n),
            "MAG_G": rng.uniform(17, 21, n),
            "MAG_R": rng.uniform(16, 20, n),
            "MAG_Z": rng.uniform(15, 19, n),
            "MAG_W1": rng.uniform(15, 19, n),
            "FIBMAG_R": rng.uniform(18, 22, n),
            "TSNR2_BGS": rng.uniform(500, 2000, n),
            "PROVABGS_LOGMSTAR": logm[:, None] + rng.normal(0, 0.1, (n, n_samples)),
            "PROVABGS_MCMC": rng.normal(0, 1, (n, n_samples, 13)).astype(np.float32),
            "PROVABGS_THETA_BF": rng.normal(0, 1, (n, 13)),
            "PROVABGS_Z_MAX": rng.uniform(0.3, 0.6, n),
            "PROVABGS_W_ZFAIL": rng.uniform(1, 1.2, n),
            "PROVABGS_W_FIBASSIGN": rng.uniform(1, 2, n),
            "IS_BGS_BRIGHT": rng.uniform(size=n) < 0.7,
            "IS_BGS_FAINT": rng.uniform(size=n) >= 0.7,
        }
    )
    if masked:
        table = Table(table, masked=True)
        for name, mask in masked.items():
            table[name].mask = mask
    with warnings.catch_warnings():
        # astropy warns about its own default table name even when it is given explicitly.
        warnings.filterwarnings("ignore", message="table path was not set")
        table.write(path, format="hdf5", path="__astropy_table__", serialize_meta=True, overwrite=True)
    return path


SPARCL_FIELDS = {  # science name -> internal name, as /api/datafields/ maps them for DESI-EDR
    "sparcl_id": "uuid",
    "specid": "specid",
    "data_release": "data_release_id",
    "flux": "flux",
    "ivar": "ivar",
    "mask": "mask",
    "wavelength": "wavelength",
    "redshift": "redshift",
    "survey": "survey",
    "program": "program",
    "healpix": "healpix",
}


def make_sparcl_record(
    targetid: int, seed: int = 0, n_pixels: int = 7781, survey: str = "sv3", program: str = "bright", healpix: int = 0
) -> dict:
    """One DESI-EDR record as the server stores it (science names; the fake maps them). A target
    observed in several surveys/programs has one record per (survey, program), each its own id."""
    rng = np.random.default_rng([seed, targetid % (1 << 32), zlib.crc32(f"{survey}/{program}".encode())])
    variant = zlib.crc32(f"{survey}/{program}/{healpix}".encode()) % 10_000
    return {
        "sparcl_id": f"{targetid:016x}-{variant:04d}-4000-8000-000000000000",
        "specid": int(targetid),
        "survey": survey,
        "program": program,
        "healpix": int(healpix),
        "data_release": "DESI-EDR",
        "flux": rng.normal(1, 0.2, n_pixels).astype(np.float32),
        "ivar": rng.uniform(0.5, 3, n_pixels).astype(np.float32),
        "mask": (rng.uniform(size=n_pixels) < 0.01).astype(np.int32) * 8,
        "wavelength": 3600.0 + 0.8 * np.arange(n_pixels),
        "redshift": float(rng.uniform(0, 0.5)),
    }


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict
    route: str
    fault: str | None
    body: bytes = b""


@dataclass
class LoopbackServer:
    """The fake services; use as a context manager. ``latency`` delays every answer (seconds)."""

    latency: float = 0.0
    files: dict[str, bytes] = field(default_factory=dict)
    sparcl_records: dict[str, dict] = field(default_factory=dict)
    sparcl_version: str = "14.2"
    #: band order of the cutout planes (None: as asked), to test selection by the BAND cards
    cutout_band_order: str | None = None
    #: science name -> internal name of the DESI-EDR fields /api/datafields/ lists
    sparcl_fields: dict[str, str] = field(default_factory=lambda: dict(SPARCL_FIELDS))
    requests: list[RequestRecord] = field(default_factory=list)
    #: (repo, revision, file) -> bytes, served as the hub serves them
    hub_files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def __post_init__(self):
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # configuration
    def add_file(self, path: str, data: bytes) -> str:
        self.files[path.lstrip("/")] = data
        return f"{self.url}/files/{path.lstrip('/')}"

    def add_hub_file(self, repo: str, revision: str, filename: str, data: bytes) -> None:
        self.hub_files[(repo, revision, filename)] = data

    def add_sparcl(self, records: list[dict]) -> None:
        for record in records:
            self.sparcl_records[str(record["sparcl_id"])] = record

    def inject(self, route: str, *faults: Fault) -> None:
        with self._lock:
            self._faults[route].extend(faults)

    def pending_faults(self, route: str) -> int:
        with self._lock:
            return len(self._faults[route])

    def count(self, route: str) -> int:
        with self._lock:
            return sum(r.route == route for r in self.requests)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def cutout_service(self) -> str:
        return f"{self.url}/viewer/cutout.fits"

    @property
    def sparcl_url(self) -> str:
        return f"{self.url}/sparcl"

    # lifecycle
    def __enter__(self) -> LoopbackServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # used by the handler
    def _next_fault(self, route: str) -> Fault | None:
        with self._lock:
            queue = self._faults[route]
            return queue.popleft() if queue else None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients in the fault tests hang up on purpose (time-outs, killed processes).
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: LoopbackServer

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and delayed ACKs
        # add ~40 ms to every sequential request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        state = self.server_state
        parts = urlsplit(self.path)
        route = _route(parts.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)) if method == "POST" else b""
        fault = state._next_fault(route) if method != "HEAD" else None
        state._record(RequestRecord(method, self.path, dict(self.headers), route, fault.kind if fault else None, body))
        if state.latency:
            time.sleep(state.latency)
        try:
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay)
                fault = None
            if fault is not None and fault.kind == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return self._send(fault.status, b"<html><body>busy</body></html>", "text/html", headers)
            if fault is not None and fault.kind == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Service error</body></html>", "text/html")
            ignore_range = fault is not None and fault.kind == "ignore_range"
            status, payload, ctype, headers = self._answer(route, parts, body, ignore_range)
            if fault is not None and fault.kind == "drop":
                return self._drop(status, payload, ctype, headers)
            if fault is not None and fault.kind == "truncate":
                payload = payload[: len(payload) // 2]
                headers.pop("Content-Range", None)
            self._send(status, payload, ctype, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out test): nothing to answer

    def _answer(self, route, parts, body, ignore_range):
        state = self.server_state
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if route == "cutout":
            payload = cutout_fits_bytes(
                float(query["ra"]),
                float(query["dec"]),
                query.get("bands", "grz"),
                int(query.get("size", 152)),
                query.get("layer", "ls-dr9"),
                state.cutout_band_order,
            )
            return 200, payload, "application/fits", {}
        if route == "files":
            name = parts.path.removeprefix("/files/")
            if name not in state.files:
                return 404, b"<html>not found</html>", "text/html", {}
            return self._ranged(state.files[name], ignore_range)
        if route == "sparcl":
            return _sparcl_answer(state, parts.path.removeprefix("/sparcl/api/").strip("/"), query, body)
        if route == "hub":
            return self._hub_answer(parts.path, ignore_range)
        return 404, b"no such route", "text/plain", {}

    def _hub_answer(self, path: str, ignore_range: bool):
        repo, revision, filename = _HUB.match(path).groups()
        files = self.server_state.hub_files
        if (repo, revision, filename) in files:
            data = files[(repo, revision, filename)]
            status, payload, ctype, headers = self._ranged(data, ignore_range)
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            return status, payload, ctype, headers | {
                "X-Repo-Commit": revision, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data)),
            }  # fmt: skip
        if not any(r == repo for r, _, _ in files):
            return 401, b"Repository not found", "text/plain", {"X-Error-Code": "RepoNotFound"}
        if not any((r, v) == (repo, revision) for r, v, _ in files):
            return 404, b"Invalid rev id", "text/plain", {"X-Error-Code": "RevisionNotFound"}
        return 404, b"Entry not found", "text/plain", {"X-Error-Code": "EntryNotFound"}

    def _ranged(self, data: bytes, ignore_range: bool):
        # "bytes=N-" (a resumed download) or "bytes=N-M" (fsspec reading parts of a FITS file)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
        if match and not ignore_range:
            start = int(match[1])
            end = min(int(match[2]), len(data) - 1) if match[2] else len(data) - 1
            if start >= len(data):
                return 416, b"", "application/octet-stream", {"Content-Range": f"bytes */{len(data)}"}
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            return 206, data[start : end + 1], "application/octet-stream", headers
        return 200, data, "application/octet-stream", {}

    def _send(self, status: int, payload: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _drop(self, status: int, payload: bytes, ctype: str, headers: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


_HUB = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _route(path: str) -> str:
    if path.startswith("/viewer/cutout"):
        return "cutout"
    if path.startswith("/files/"):
        return "files"
    if path.startswith("/sparcl/api/"):
        return "sparcl"
    if _HUB.match(path):
        return "hub"
    return "unknown"


def _sparcl_answer(state: LoopbackServer, endpoint: str, query: dict, body: bytes):
    internal = state.sparcl_fields
    science = {v: k for k, v in internal.items()}
    if endpoint == "version":
        return 200, state.sparcl_version.encode(), "application/json", {}
    if endpoint == "datafields":
        fields = [
            {"data_release": dr, "origdp": origdp, "newdp": newdp, "storage": "C", "default": True, "all": True}
            for dr, prefix in (("DESI-EDR", ""), ("SDSS-DR16", "sdss_"))
            for newdp, origdp in internal.items()
            for origdp in [
                origdp if not prefix or newdp in ("sparcl_id", "specid", "data_release") else prefix + origdp
            ]
        ]
        return 200, json.dumps(fields).encode(), "application/json", {}
    if endpoint == "find":
        spec = json.loads(body)
        constraints = {c[0]: c[1:] for c in spec["search"]}
        specids = {int(s) for s in constraints.get(internal["specid"], [])}
        releases = set(constraints.get(internal["data_release"], ["DESI-EDR"]))
        limit = int(query.get("limit", 500))
        stored = [r for _, r in sorted(state.sparcl_records.items())]
        found = [r for r in stored if r["specid"] in specids and r["data_release"] in releases]
        records = [{**{f: r[science[f]] for f in spec["outfields"]}, "_dr": r["data_release"]} for r in found[:limit]]
        return 200, json.dumps([{"status": {"success": True}}, *records]).encode(), "application/json", {}
    if endpoint == "spectras":
        wanted_ids = json.loads(body)
        include = query["include"].split(",")
        by_uuid = state.sparcl_records
        records = [
            {**{f: by_uuid[u][science[f]] for f in include}, "_dr": by_uuid[u]["data_release"]}
            for u in wanted_ids
            if u in by_uuid
        ]
        absent = len(wanted_ids) - len(records)
        warnings = [f"{absent} out of the {len(wanted_ids)} requested ids have no records"] if absent else []
        header = {"status": {"success": True, "info": [], "warnings": warnings}}
        return 200, pickle.dumps([header, *records], protocol=4), "application/octet-stream", {}
    return 404, json.dumps({"errorCode": "BADPATH", "errorMessage": endpoint}).encode(), "application/json", {}
