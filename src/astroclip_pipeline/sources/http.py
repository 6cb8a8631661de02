"""A polite HTTP client for the survey services: bounded concurrency, rate limits, retries, resume.

The public services this pipeline downloads from (the Legacy Survey cutout service, the DESI
archive, SPARCL) are shared by the whole community, so every request made here

- names this project, its version and (when the config gives one) a contact in its User-Agent,
  so that an operator can tell who is calling and whom to write to;
- waits for a per-host token bucket (``requests_per_second``), whatever the thread count;
- is retried by urllib3's ``Retry`` (mounted on each requests session) on connection errors,
  time-outs, 408, 425, 429 and 5xx, with exponential backoff and jitter, waiting at least as
  long as a ``Retry-After`` header asks (seconds or HTTP-date form, capped);
- is never retried on another 4xx: the answer will not change, so :class:`HTTPStatusError` says
  which URL gave which status at once.

What urllib3 does not do is kept here: the per-host rate limit; a body that arrives with status
200 but is wrong (an HTML error page, a truncated file) is caught by a ``validate`` callback
that raises :class:`PayloadError`, and a connection dropped mid-body; both are retried a bounded
number of times and then reported as a :class:`DownloadError`.

Big single files (the PROVABGS catalogue, the official AstroCLIP HDF5) go through
:meth:`Fetcher.download_file`, which streams into ``<name>.part`` and resumes it with an HTTP
``Range`` request after a dropped connection or a killed process.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

#: What this project is, for an operator who sees its traffic (it has no public home yet; the
#: config's ``downloads.contact`` says whom to write to).
PROJECT = "astroclip-pipeline"
PROJECT_DESCRIPTION = "AstroCLIP reproduction workflow, Snakemake"

#: Statuses that mean "try again later": 408, 425, 429 and every 5xx; every other 4xx is final.
RETRYABLE_STATUSES = frozenset({408, 425, 429, *range(500, 600)})


def package_version() -> str:
    """The installed version of this package, or ``dev`` when it runs from a source tree."""
    try:
        return metadata.version("astroclip-pipeline")
    except metadata.PackageNotFoundError:
        return "dev"


def user_agent(contact: str | None = None) -> str:
    """``astroclip-pipeline/<version> (<what it is>; contact: <contact>) python-requests/<version>``.

    ``contact`` (an e-mail address or URL the user sets in the config) is left out when None.
    """
    about = PROJECT_DESCRIPTION + (f"; contact: {contact}" if contact else "")
    return f"{PROJECT}/{package_version()} ({about}) python-requests/{requests.__version__}"


class DownloadError(RuntimeError):
    """A request that still failed after every allowed attempt; ``reasons`` lists what went wrong."""

    def __init__(self, url: str, reasons: list[str], attempts: int | None = None):
        self.url = url
        self.reasons = reasons
        attempts = len(reasons) if attempts is None else attempts
        super().__init__(f"{url}: gave up after {attempts} attempt(s): {'; '.join(reasons)}")


class HTTPStatusError(DownloadError):
    """A final (non-retryable) HTTP status such as 400, 403 or 404."""

    def __init__(self, url: str, status: int, body_start: str = ""):
        self.status = status
        detail = f" ({body_start})" if body_start else ""
        RuntimeError.__init__(self, f"{url}: HTTP {status}, which is not retried{detail}")
        self.url = url
        self.reasons = [f"HTTP {status}"]


class PayloadError(ValueError):
    """Raised by a ``validate`` callback: the body arrived but is not what the URL should give."""


Validator = Callable[[bytes, Mapping[str, str]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``attempts`` is the number of tries of one request. The waits are urllib3's: none before the
    first retry, then ``backoff_base``, ``2 * backoff_base``, ``4 * backoff_base``... up to
    ``backoff_max``, each plus a random jitter of up to ``jitter * backoff_base`` seconds (so that
    many clients do not retry in step), or the server's ``Retry-After`` if that is longer (capped
    at ``retry_after_max``). Tests set a tiny ``backoff_base``.
    """

    attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 120.0
    jitter: float = 0.5
    retry_after_max: float = 600.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy: backoff must be >= 0 and jitter in [0, 1), got {self}")

    def urllib3_retry(self, sleep: Callable[[float], None] = time.sleep) -> Retry:
        """This policy as urllib3's ``Retry`` (GET and POST: every POST here is a query)."""
        return _Retry(
            total=self.attempts - 1,
            status_forcelist=RETRYABLE_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            backoff_factor=self.backoff_base / 2,  # urllib3 waits factor * 2**(k-1) from its 2nd retry
            backoff_max=self.backoff_max,
            backoff_jitter=self.jitter * self.backoff_base,
            retry_after_max=int(self.retry_after_max),
            raise_on_status=False,  # the last answer comes back, to be reported with every attempt
            raise_on_redirect=False,
            sleep=sleep,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after ``attempt`` failed tries, for the retries urllib3 cannot make (bodies)."""
        wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return wait + rng.uniform(0, self.jitter * self.backoff_base)


class _Retry(Retry):
    """urllib3's Retry, sleeping through a given function (the Fetcher's, which tests record) and
    never shorter than ``Retry-After`` asks (urllib3 sleeps either the one or the other)."""

    def __init__(self, *args, sleep: Callable[[float], None] = time.sleep, **kwargs):
        super().__init__(*args, **kwargs)
        self._sleep = sleep

    def new(self, **kwargs) -> Retry:
        retry = super().new(**kwargs)
        retry._sleep = self._sleep
        return retry

    def sleep(self, response=None) -> None:
        wait = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            wait = max(wait, self.get_retry_after(response) or 0.0)
        if wait > 0:
            self._sleep(wait)


def parse_retry_after(value: str | None, retry_after_max: float = RetryPolicy.retry_after_max) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (``"120"`` or an HTTP-date), by urllib3's
    parser; None if absent or unreadable."""
    if not value:
        return None
    try:
        return float(Retry(retry_after_max=int(retry_after_max)).parse_retry_after(value))
    except InvalidHeader:
        return None


class TokenBucket:
    """At most ``rate`` requests per second on average, with bursts of up to ``burst``. Thread-safe."""

    def __init__(self, rate: float, burst: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0 or burst < 1:
            raise ValueError(f"TokenBucket needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate, self.burst = float(rate), float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            # Sleep outside the lock so that other threads can compute their own waits.
            self._sleep(wait)


@dataclass
class Fetched:
    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes


@dataclass
class FetchOutcome:
    """One item of :meth:`Fetcher.map`: the key, and either the result or the exception it raised."""

    key: Any
    result: Any = None
    error: BaseException | None = None


@dataclass
class Fetcher:
    """Polite HTTP GET/POST with retries, shared by every download of one job.

    ``max_workers`` bounds the threads of :meth:`map`; ``requests_per_second`` (per host, across
    all threads; None for no limit) and ``burst`` set each host's token bucket; ``timeout`` is
    (connect, read) in seconds; ``contact`` goes into the User-Agent (see :func:`user_agent`).
    """

    max_workers: int = 4
    requests_per_second: float | None = 5.0
    burst: float = 1.0
    timeout: tuple[float, float] = (10.0, 120.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    contact: str | None = None
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None

    def __post_init__(self):
        if self.max_workers < 1:
            raise ValueError(f"Fetcher.max_workers must be >= 1, got {self.max_workers}")
        self.user_agent = user_agent(self.contact)
        self._local = threading.local()
        self._buckets: dict[str, TokenBucket] = {}
        self._buckets_lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._rng_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe, so each worker thread gets its own.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            adapter = HTTPAdapter(max_retries=self.retry.urllib3_retry(self.sleep))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _wait_for_host(self, url: str) -> None:
        if not self.requests_per_second:
            return
        host = urlsplit(url).netloc
        with self._buckets_lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                bucket = self._buckets[host] = TokenBucket(self.requests_per_second, self.burst, sleep=self.sleep)
        bucket.acquire()

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        with self._rng_lock:
            wait = self.retry.backoff(attempt, self._rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry.retry_after_max))
        return wait

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        """One request with urllib3's retries (connection errors, time-outs, retryable statuses).

        Raises DownloadError when they are spent, listing each attempt, and HTTPStatusError for a
        final 4xx; returns any 2xx answer, its body not yet read.
        """
        self._wait_for_host(url)
        try:
            # stream: the body is read by the caller, where a connection dropped mid-body is retried
            response = self._session().request(method, url, timeout=self.timeout, stream=True, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise DownloadError(url, [f"{type(err).__name__}: {err}"], self.retry.attempts) from err
        if response.status_code in RETRYABLE_STATUSES:
            retries = getattr(response.raw, "retries", None)
            history = [f"HTTP {h.status}" if h.status else str(h.error) for h in getattr(retries, "history", ())]
            response.close()
            raise DownloadError(response.url or url, [*history, f"HTTP {response.status_code}"])
        if not 200 <= response.status_code < 300:
            raise HTTPStatusError(response.url or url, response.status_code, _body_start(response.content))
        return response

    # -- single requests -------------------------------------------------------------------------

    def get(self, url: str, *, params: Mapping | None = None, validate: Validator | None = None) -> Fetched:
        return self.request("GET", url, params=params, validate=validate)

    def post_json(
        self, url: str, payload: Any, *, params: Mapping | None = None, validate: Validator | None = None
    ) -> Fetched:
        return self.request("POST", url, params=params, json=payload, validate=validate)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping | None = None,
        json: Any = None,
        validate: Validator | None = None,
    ) -> Fetched:
        """One request, retried as the policy says; returns the whole body once it validates.

        urllib3 retries the request itself (:meth:`_send`); this loop retries what it cannot
        see: a body cut short mid-way, or one that ``validate`` rejects.
        """
        reasons: list[str] = []
        for attempt in range(1, self.retry.attempts + 1):
            response = self._send(method, url, params=params, json=json)
            try:
                content = response.content  # a connection dropped mid-body raises here
                _check_length(content, response.headers)
                if validate is not None:
                    validate(content, response.headers)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                reasons.append(f"connection dropped mid-body: {err}")
            except PayloadError as err:
                reasons.append(f"bad payload: {err}")
            else:
                return Fetched(response.url or url, response.status_code, response.headers, content)
            if attempt < self.retry.attempts:
                wait = self._backoff(attempt)
                log.warning(
                    "%s %s: %s; retry %d/%d in %.2f s", method, url, reasons[-1], attempt, self.retry.attempts - 1, wait
                )
                self.sleep(wait)
        raise DownloadError(url, reasons)

    # -- many requests ---------------------------------------------------------------------------

    def map(self, task: Callable[[Any], Any], keys: Iterable[Any]) -> Iterator[FetchOutcome]:
        """Run ``task(key)`` for every key on ``max_workers`` threads; yield outcomes as they finish.

        A task's exception is returned in its outcome rather than raised, so that one failure does
        not lose the others' results; KeyboardInterrupt and SystemExit still stop everything.
        """
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="fetch") as pool:
            futures = {pool.submit(task, key): key for key in keys}
            try:
                for future in as_completed(futures):
                    error = future.exception()
                    if isinstance(error, KeyboardInterrupt | SystemExit):
                        raise error
                    yield FetchOutcome(futures[future], None if error else future.result(), error)
            finally:
                for future in futures:
                    future.cancel()

    # -- big files -------------------------------------------------------------------------------

    def download_file(
        self,
        url: str,
        destination: str | os.PathLike,
        *,
        expected_size: int | None = None,
        validate_file: Callable[[Path], None] | None = None,
        chunk_size: int = 1 << 20,
        progress: bool = True,
    ) -> Path:
        """Download ``url`` to ``destination``, resuming ``destination.part`` with HTTP Range.

        A finished file exists under its real name only after its size matched the server's
        ``Content-Range``/``Content-Length`` (and ``expected_size``, when given) and
        ``validate_file(part_path)`` passed; an existing ``destination`` is taken as finished.
        Each attempt that adds bytes resets the retry count, so a long download over a flaky
        link makes progress instead of giving up; an attempt that adds nothing counts.
        """
        destination = Path(destination)
        if destination.exists():
            return destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        part = destination.with_name(destination.name + ".part")
        reasons: list[str] = []
        failures = 0
        bar = tqdm(desc=destination.name, unit="B", unit_scale=True, disable=not progress)
        try:
            while True:
                before = part.stat().st_size if part.exists() else 0
                try:
                    total = self._stream_into(url, part, chunk_size, bar)
                except _RetryableDownload as err:
                    reasons.append(str(err))
                    retry_after = err.retry_after
                else:
                    problem = _finish_part(part, destination, total, expected_size, validate_file)
                    if problem is None:
                        return destination
                    reasons.append(problem)
                    retry_after = None
                grew = part.exists() and part.stat().st_size > before
                failures = 0 if grew else failures + 1
                if failures >= self.retry.attempts:
                    raise DownloadError(url, reasons)
                wait = self._backoff(max(failures, 1), retry_after)
                log.warning("%s: %s; resuming in %.2f s", url, reasons[-1], wait)
                self.sleep(wait)
        finally:
            bar.close()

    def _stream_into(self, url: str, part: Path, chunk_size: int, bar) -> int | None:
        """Append the rest of ``url`` to ``part``; return the full size the server announced."""
        have = part.stat().st_size if part.exists() else 0
        # Byte ranges count the bytes as sent: ask for them uncompressed so offsets match the file.
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        self._wait_for_host(url)
        try:
            response = self._session().get(url, headers=headers, stream=True, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _RetryableDownload(f"{type(err).__name__}: {err}") from err
        with response:
            status = response.status_code
            if status == 416 and have:
                total = _total_from_content_range(response.headers.get("Content-Range"))
                if total == have:
                    return total  # the part file was already complete when the process stopped
                part.unlink()
                raise _RetryableDownload(f"HTTP 416 for bytes={have}- of a {total}-byte file; restarting")
            if status in RETRYABLE_STATUSES:  # urllib3's retries are spent: retry the download
                raise _RetryableDownload(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
            if status not in (200, 206):
                raise HTTPStatusError(url, status)
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"), url)
                if start != have:
                    part.unlink()
                    raise _RetryableDownload(f"server resumed at byte {start}, not {have}; restarting")
                mode = "ab"
            else:
                # The server ignored the Range header (or there was none): the body is the whole file.
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
                have, mode = 0, "wb"
                if response.headers.get("Content-Type", "").startswith("text/html"):
                    raise _RetryableDownload("got an HTML page instead of the file")
            bar.reset(total=total)
            bar.update(have)
            try:
                with open(part, mode) as out:
                    for chunk in response.iter_content(chunk_size):
                        out.write(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
                raise _RetryableDownload(f"connection dropped mid-body: {err}") from err
            return total


class _RetryableDownload(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _check_length(content: bytes, headers: Mapping[str, str]) -> None:
    # urllib3 already refuses a short body on a kept-alive connection; this also catches a proxy
    # or server that closes early without raising.
    length = headers.get("Content-Length")
    encoded = headers.get("Content-Encoding", "identity") not in ("", "identity")
    if length is not None and not encoded and len(content) != int(length):
        raise PayloadError(f"body has {len(content)} bytes, Content-Length says {length}")


def _body_start(content: bytes, n: int = 200) -> str:
    return content[:n].decode("utf-8", "replace").strip().replace("\n", " ")


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        raise _RetryableDownload(f"206 response with unreadable Content-Range {value!r} from {url}")
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), total


def _total_from_content_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(match[1]) if match else None


def _finish_part(part: Path, destination: Path, total: int | None, expected: int | None, validate_file) -> str | None:
    """Rename a complete, valid ``part`` to ``destination``; otherwise say what is wrong with it."""
    size = part.stat().st_size
    if total is not None and size < total:
        return f"stream ended at byte {size} of {total}"  # keep the bytes: the next attempt resumes
    problem = None
    if total is not None and size != total:
        problem = f"file has {size} bytes, the server announced {total}"
    elif expected is not None and size != expected:
        problem = f"file has {size} bytes, expected {expected}"
    elif validate_file is not None:
        try:
            validate_file(part)
        except (PayloadError, OSError, ValueError) as err:
            problem = f"downloaded file does not validate: {err}"
    if problem is None:
        os.replace(part, destination)
    else:
        part.unlink()  # a complete but wrong file cannot be repaired by resuming: start again
    return problem


def fetcher_from_config(downloads: Mapping[str, Any]) -> Fetcher:
    """A Fetcher from the ``downloads:`` block of the workflow's config (keys as in its schema)."""
    return Fetcher(
        max_workers=downloads["max_workers"],
        requests_per_second=downloads["requests_per_second"],
        burst=downloads["burst"],
        timeout=(downloads["connect_timeout"], downloads["read_timeout"]),
        retry=RetryPolicy(
            attempts=downloads["attempts"], backoff_base=downloads["backoff_base"], backoff_max=downloads["backoff_max"]
        ),
        contact=downloads.get("contact"),
    )
