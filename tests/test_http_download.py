"""The polite HTTP client and the cutout shard downloader against the loopback services."""

import email.utils
import io
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from urllib3.util.retry import RequestHistory

from astroclip_pipeline.sources.http import (
    DownloadError,
    Fetcher,
    HTTPStatusError,
    PayloadError,
    RetryPolicy,
    TokenBucket,
    fetcher_from_config,
    package_version,
    parse_retry_after,
)
from astroclip_pipeline.sources.legacysurvey import (
    CutoutError,
    CutoutSpec,
    IncompleteShardError,
    MissingBandError,
    NoImageError,
    NonFiniteCutoutError,
    band_coverage,
    cutout_url,
    download_cutout_shard,
    is_out_of_footprint,
    no_data_reason,
    read_cutout_fits,
)
from astroclip_pipeline.sources.shards import read_cutout_shard, read_missing

from .loopback import Fault, LoopbackServer, cutout_fits_bytes, make_cutout

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
# Twelve targets: DEC < -80 is outside the footprint, DEC > 85 has a NaN pixel.
TARGETS = pd.DataFrame(
    {
        "TARGETID": np.arange(100, 112, dtype=np.int64),
        "RA": np.linspace(150.0, 151.1, 12),
        "DEC": [2.0, 2.1, -85.0, 2.3, 2.4, 89.0, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1],
        "SHARD": 0,
    }
)


def fetcher(**overrides) -> Fetcher:
    options = dict(
        max_workers=4,
        requests_per_second=None,
        timeout=(2.0, 2.0),
        retry=RetryPolicy(attempts=5, backoff_base=0.001, backoff_max=0.01),
    )
    options.update(overrides)
    return Fetcher(**options)


def shard_bytes(out_dir: Path) -> tuple[bytes, bytes]:
    return (out_dir / "shard-0.h5").read_bytes(), (out_dir / "missing-0.csv").read_bytes()


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[bytes, bytes]:
    """The shard files of a fault-free run, which every faulty run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference")
    with LoopbackServer() as srv:
        download_cutout_shard(
            TARGETS, 0, out, fetcher(), CutoutSpec(size=SIZE, service=srv.cutout_service), progress=False
        )
    return shard_bytes(out)


# -- the HTTP client -------------------------------------------------------------------------------


def test_requests_name_this_project_its_version_and_the_users_contact(server):
    url = cutout_url(10, 0, CutoutSpec(size=SIZE, service=server.cutout_service))
    fetcher().get(url)
    fetcher(contact="astro@example.org").get(url)
    anonymous, signed = (r.headers["User-Agent"] for r in server.requests)
    version = re.escape(package_version())
    pattern = rf"astroclip-pipeline/{version} \(AstroCLIP reproduction [^;)]*\) python-requests/\S+"
    assert re.fullmatch(pattern, anonymous), anonymous
    assert "; contact: astro@example.org)" in signed
    assert "PolymathicAI" not in anonymous + signed  # the upstream project is not who is calling
    downloads = {
        "max_workers": 1, "requests_per_second": None, "burst": 1, "connect_timeout": 1, "read_timeout": 1,
        "attempts": 2, "backoff_base": 0.01, "backoff_max": 0.1, "contact": "https://example.org/me",
    }  # fmt: skip
    assert "; contact: https://example.org/me) python-requests/" in fetcher_from_config(downloads).user_agent


def test_retry_after_is_read_in_seconds_and_http_date_form():
    assert parse_retry_after("120") == 120
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=45), usegmt=True)
    assert parse_retry_after(later) == pytest.approx(45, abs=1.5)
    assert parse_retry_after(email.utils.format_datetime(datetime.now(UTC) - timedelta(seconds=5), usegmt=True)) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("100000") == RetryPolicy().retry_after_max


def test_token_bucket_spaces_requests_at_the_rate():
    clock = [0.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds

    bucket = TokenBucket(rate=4.0, burst=2, clock=lambda: clock[0], sleep=sleep)
    for _ in range(10):
        bucket.acquire()
    # Two requests ride the burst; the other eight wait a quarter second each.
    assert clock[0] == pytest.approx(8 / 4.0)


def test_rate_limit_holds_across_threads(server):
    spec = CutoutSpec(size=8, service=server.cutout_service)
    client = fetcher(max_workers=8, requests_per_second=40.0, burst=1)
    start = time.monotonic()
    outcomes = list(client.map(lambda k: client.get(cutout_url(10 + k, 0, spec)), range(12)))
    elapsed = time.monotonic() - start
    assert all(o.error is None for o in outcomes)
    assert elapsed >= 11 / 40.0 * 0.9  # 12 requests at 40/s need at least 11 gaps of 25 ms


def test_429_waits_as_long_as_retry_after_says(server):
    waits = []
    client = fetcher(sleep=waits.append)
    http_date = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server.inject("cutout", Fault("status", 429, retry_after="7"), Fault("status", 429, retry_after=http_date))
    body = client.get(cutout_url(10, 0, CutoutSpec(size=SIZE, service=server.cutout_service))).content
    assert np.array_equal(read_cutout_fits(body, "grz", SIZE), make_cutout(10, 0, "grz", SIZE))
    assert waits[0] >= 7 and 25 <= waits[1] <= 31


def test_other_4xx_is_final_and_names_url_and_status(server):
    server.inject("cutout", Fault("status", 404))
    url = cutout_url(10, 0, CutoutSpec(size=SIZE, service=server.cutout_service))
    with pytest.raises(HTTPStatusError, match=r"cutout\.fits\?ra=10.*HTTP 404") as info:
        fetcher().get(url)
    assert info.value.status == 404 and server.count("cutout") == 1


def test_retries_are_bounded_and_every_attempt_is_reported(server):
    server.inject("cutout", *[Fault("status", 503)] * 3)
    client = fetcher(retry=RetryPolicy(attempts=3, backoff_base=0.001))
    with pytest.raises(DownloadError, match=r"gave up after 3 attempt\(s\): HTTP 503; HTTP 503; HTTP 503"):
        client.get(cutout_url(10, 0, CutoutSpec(size=SIZE, service=server.cutout_service)))
    assert server.count("cutout") == 3


def test_a_payload_the_validator_rejects_is_retried(server):
    seen = []

    def validate(body, headers):
        seen.append(len(body))
        if len(seen) < 3:
            raise PayloadError("not yet")

    fetcher().get(cutout_url(10, 0, CutoutSpec(size=SIZE, service=server.cutout_service)), validate=validate)
    assert len(seen) == 3 and server.count("cutout") == 3


# -- cutout answers --------------------------------------------------------------------------------


def test_cutout_url_carries_the_layer_pixscale_bands_and_size():
    url = cutout_url(150.5, -2.25)
    assert url.startswith("https://www.legacysurvey.org/viewer/cutout.fits?")
    assert "ra=150.5000000000&dec=-2.2500000000&layer=ls-dr9&pixscale=0.262&bands=grz&size=152" in url
    with pytest.raises(ValueError, match="outside"):
        cutout_url(400, 0)


def test_read_cutout_fits_returns_native_float32_nanomaggies():
    image = read_cutout_fits(cutout_fits_bytes(10, 1, "grz", SIZE), "grz", SIZE)
    assert image.dtype == np.float32 and image.dtype.byteorder in "=|<" and image.shape == (3, SIZE, SIZE)
    assert np.array_equal(image, make_cutout(10, 1, "grz", SIZE))


def _with_card(body: bytes, key: str, value) -> bytes:
    with fits.open(io.BytesIO(body)) as hdul:
        hdul[0].header[key] = value
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<!DOCTYPE html><html>Service unavailable</html>", "HTML page"),
        (b"\x00\x01 binary junk", "not a FITS file"),
        (cutout_fits_bytes(10, 1, "grz", SIZE)[:-5000], "truncated"),
        (_with_card(cutout_fits_bytes(10, 1, "grz", SIZE), "BUNIT", "adu"), "BUNIT='adu'"),
    ],
)
def test_malformed_cutouts_are_rejected_with_the_reason(body, message):
    with pytest.raises(CutoutError, match=message):
        read_cutout_fits(body, "grz", SIZE)


def test_non_finite_and_empty_cutouts_are_recognised():
    with pytest.raises(NonFiniteCutoutError, match="1 non-finite"):
        read_cutout_fits(cutout_fits_bytes(10, 89, "grz", SIZE), "grz", SIZE)
    assert is_out_of_footprint(read_cutout_fits(cutout_fits_bytes(10, -85, "grz", SIZE), "grz", SIZE))
    assert not is_out_of_footprint(make_cutout(10, 1, "grz", SIZE))


# -- cutout shards ---------------------------------------------------------------------------------


def test_a_shard_holds_every_deliverable_target_and_lists_the_rest(server, tmp_path, reference):
    summary = download_cutout_shard(
        TARGETS, 0, tmp_path, fetcher(), CutoutSpec(size=SIZE, service=server.cutout_service), progress=False
    )
    shard = read_cutout_shard(tmp_path / "shard-0.h5")
    missing = read_missing(tmp_path / "missing-0.csv")
    assert list(shard.targetid) == [t for t in TARGETS.TARGETID if t not in (102, 105)]
    for targetid, image in zip(shard.targetid, shard.image, strict=True):
        row = TARGETS.set_index("TARGETID").loc[targetid]
        assert np.array_equal(image, make_cutout(row.RA, row.DEC, "grz", SIZE))
    assert dict(zip(missing.TARGETID, missing.reason.str.split(":").str[0], strict=True)) == {
        102: "out_of_footprint",
        105: "non_finite",
    }
    assert shard.bands == "grz" and shard.pixscale == pytest.approx(0.262)
    assert (summary.downloaded, summary.missing["out_of_footprint"], summary.missing["non_finite"]) == (10, 1, 1)
    assert shard_bytes(tmp_path) == reference
    assert not (tmp_path / ".partial-0").exists()


FAULTS = {
    "429 + Retry-After": [Fault("status", 429, retry_after="0")],
    "500/503 burst": [Fault("status", 500), Fault("status", 503), Fault("status", 500), Fault("status", 503)],
    "dropped mid-body": [Fault("drop"), Fault("drop")],
    "truncated FITS": [Fault("truncate")],
    "HTML with 200": [Fault("html")],
    "slower than the time-out": [Fault("slow", delay=1.0)],
}


@pytest.mark.parametrize("faults", FAULTS.values(), ids=FAULTS.keys())
def test_each_fault_is_retried_and_the_shard_matches_a_fault_free_run(server, tmp_path, reference, faults):
    server.inject("cutout", *faults)
    client = fetcher(timeout=(2.0, 0.3))
    summary = download_cutout_shard(
        TARGETS, 0, tmp_path, client, CutoutSpec(size=SIZE, service=server.cutout_service), progress=False
    )
    assert server.pending_faults("cutout") == 0
    assert server.count("cutout") == len(TARGETS) + len(faults)
    assert summary.failed == 0 and summary.downloaded == 10
    assert shard_bytes(tmp_path) == reference


def test_failed_targets_stop_the_shard_and_the_rerun_fetches_only_them(server, tmp_path, reference):
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    server.inject("cutout", Fault("status", 503), Fault("status", 503))
    client = fetcher(max_workers=1, retry=RetryPolicy(attempts=2, backoff_base=0.001))
    with pytest.raises(IncompleteShardError, match=r"1 of 12 target\(s\) failed"):
        download_cutout_shard(TARGETS, 0, tmp_path, client, spec, progress=False)
    assert not (tmp_path / "shard-0.h5").exists() and not (tmp_path / "missing-0.csv").exists()
    assert len(list((tmp_path / ".partial-0").iterdir())) == 11
    before = server.count("cutout")
    summary = download_cutout_shard(TARGETS, 0, tmp_path, client, spec, progress=False)
    assert server.count("cutout") - before == 1 and summary.resumed == 11
    assert shard_bytes(tmp_path) == reference


def test_record_failures_lists_them_instead_of_stopping(server, tmp_path):
    server.inject("cutout", Fault("status", 503), Fault("status", 503))
    client = fetcher(max_workers=1, retry=RetryPolicy(attempts=2, backoff_base=0.001))
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    summary = download_cutout_shard(TARGETS, 0, tmp_path, client, spec, record_failures=True, progress=False)
    missing = read_missing(tmp_path / "missing-0.csv")
    failed = missing[missing.reason.str.startswith("download_failed")]
    assert len(failed) == 1 and "HTTP 503" in failed.reason.iloc[0] and summary.missing["download_failed"] == 1


def test_a_final_http_error_is_listed_as_missing(server, tmp_path):
    server.inject("cutout", Fault("status", 404))
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    download_cutout_shard(TARGETS, 0, tmp_path, fetcher(max_workers=1), spec, progress=False)
    missing = read_missing(tmp_path / "missing-0.csv")
    assert missing.reason.tolist().count("http_404") == 1 and server.count("cutout") == len(TARGETS)


def test_a_finished_shard_is_skipped(server, tmp_path):
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    download_cutout_shard(TARGETS, 0, tmp_path, fetcher(), spec, progress=False)
    before = server.count("cutout")
    summary = download_cutout_shard(TARGETS, 0, tmp_path, fetcher(), spec, progress=False)
    assert summary.already_done and server.count("cutout") == before


def test_bad_targets_tables_are_refused(tmp_path):
    with pytest.raises(KeyError, match="lacks column"):
        download_cutout_shard(TARGETS.drop(columns="DEC"), 0, tmp_path, fetcher(), progress=False)
    with pytest.raises(ValueError, match="no targets in shard 3"):
        download_cutout_shard(TARGETS, 3, tmp_path, fetcher(), progress=False)


KILL_SCRIPT = """
import sys
import pandas as pd
from astroclip_pipeline.sources.http import Fetcher, RetryPolicy
from astroclip_pipeline.sources.legacysurvey import CutoutSpec, download_cutout_shard
targets = pd.read_parquet(sys.argv[1])
fetcher = Fetcher(max_workers=2, requests_per_second=None, retry=RetryPolicy(backoff_base=0.001))
download_cutout_shard(targets, 0, sys.argv[2], fetcher, CutoutSpec(size=int(sys.argv[4]), service=sys.argv[3]),
                      progress=False)
"""


def test_a_killed_download_resumes_to_the_same_bytes(tmp_path):
    targets = pd.DataFrame(
        {"TARGETID": np.arange(40, dtype=np.int64) + 1, "RA": np.linspace(20, 24, 40), "DEC": 5.0, "SHARD": 0}
    )
    targets.to_parquet(tmp_path / "targets.parquet")
    with LoopbackServer() as srv:
        spec = CutoutSpec(size=SIZE, service=srv.cutout_service)
        download_cutout_shard(targets, 0, tmp_path / "reference", fetcher(), spec, progress=False)
        srv.latency = 0.05
        out = tmp_path / "killed"
        process = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "targets.parquet"), str(out), spec.service, str(SIZE)],
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        sidecar = out / ".partial-0"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(sidecar.glob("*.npy")) if sidecar.exists() else []) < 8:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        finished = len(list(sidecar.glob("*.npy")))
        assert 8 <= finished < 40 and not (out / "shard-0.h5").exists()
        srv.latency = 0.0
        before = srv.count("cutout")
        summary = download_cutout_shard(targets, 0, out, fetcher(), spec, progress=False)
        assert summary.resumed == finished and srv.count("cutout") - before == 40 - finished
    assert shard_bytes(out) == shard_bytes(tmp_path / "reference")


# -- big files with Range resume -------------------------------------------------------------------

BLOB = np.random.default_rng(5).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()


def test_a_dropped_big_file_resumes_with_a_range_request(server, tmp_path):
    url = server.add_file("big/catalogue.h5", BLOB)
    server.inject("files", Fault("drop"), Fault("drop"))
    path = fetcher().download_file(
        url, tmp_path / "catalogue.h5", expected_size=len(BLOB), chunk_size=1 << 16, progress=False
    )
    assert path.read_bytes() == BLOB and not (tmp_path / "catalogue.h5.part").exists()
    ranges = [r.headers.get("Range") for r in server.requests]
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    # Each attempt resumes after the whole chunks the previous one wrote (half of what was left).
    assert ranges[0] is None and len(starts) == 2 and 0 < starts[0] <= len(BLOB) // 2 < starts[1] < len(BLOB)


def test_a_leftover_part_file_is_resumed_not_restarted(server, tmp_path):
    url = server.add_file("big/catalogue.h5", BLOB)
    (tmp_path / "catalogue.h5.part").write_bytes(BLOB[:1_234_567])
    fetcher().download_file(url, tmp_path / "catalogue.h5", progress=False)
    assert (tmp_path / "catalogue.h5").read_bytes() == BLOB
    assert [r.headers.get("Range") for r in server.requests] == ["bytes=1234567-"]


def test_a_complete_part_file_is_finished_after_416(server, tmp_path):
    url = server.add_file("big/catalogue.h5", BLOB)
    (tmp_path / "catalogue.h5.part").write_bytes(BLOB)
    fetcher().download_file(url, tmp_path / "catalogue.h5", progress=False)
    assert (tmp_path / "catalogue.h5").read_bytes() == BLOB and server.count("files") == 1


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path):
    url = server.add_file("big/catalogue.h5", BLOB)
    (tmp_path / "catalogue.h5.part").write_bytes(b"stale bytes from another file")
    server.inject("files", Fault("ignore_range"))
    fetcher().download_file(url, tmp_path / "catalogue.h5", progress=False)
    assert (tmp_path / "catalogue.h5").read_bytes() == BLOB


def test_a_short_complete_looking_file_is_caught_by_size_and_redone(server, tmp_path):
    url = server.add_file("big/catalogue.h5", BLOB)
    server.inject("files", Fault("truncate"))
    fetcher().download_file(url, tmp_path / "catalogue.h5", expected_size=len(BLOB), progress=False)
    assert (tmp_path / "catalogue.h5").read_bytes() == BLOB and server.count("files") == 2


def test_a_file_that_never_validates_is_reported_and_not_kept(server, tmp_path):
    url = server.add_file("big/page.h5", b"<html>maintenance</html>")

    def validate(path):
        raise PayloadError(f"{path} is not HDF5")

    client = fetcher(retry=RetryPolicy(attempts=3, backoff_base=0.001))
    with pytest.raises(DownloadError, match="does not validate"):
        client.download_file(url, tmp_path / "page.h5", validate_file=validate, progress=False)
    assert not (tmp_path / "page.h5").exists() and not (tmp_path / "page.h5.part").exists()


def test_a_missing_big_file_is_a_final_error(server, tmp_path):
    with pytest.raises(HTTPStatusError, match="HTTP 404"):
        fetcher().download_file(f"{server.url}/files/absent.h5", tmp_path / "absent.h5", progress=False)


# -- any valid cutout; "no data" in each of its forms; DR10 (issue 17, case c6) --------------------

CASES = Path(__file__).parent / "data" / "cases"


def test_a_valid_cutout_is_read_as_it_is_and_expectations_are_checked_only_when_asked():
    two_bands = cutout_fits_bytes(10, 1, "gr", SIZE)
    image = read_cutout_fits(two_bands)
    assert image.shape == (2, SIZE, SIZE) and np.array_equal(image, make_cutout(10, 1, "gr", SIZE))
    with pytest.raises(MissingBandError, match="no z plane; the file holds bands 'gr'"):
        read_cutout_fits(two_bands, "grz")
    with pytest.raises(CutoutError, match=r"image is \(32, 32\), expected \(64, 64\)"):
        read_cutout_fits(two_bands, size=64)
    with pytest.raises(NoImageError, match="no image"):
        read_cutout_fits(cutout_fits_bytes(10, -67.0, "grz", SIZE))


def test_planes_are_selected_by_their_band_cards_never_by_position():
    body = cutout_fits_bytes(10, 1, "griz", SIZE, layer="ls-dr10", order="zirg")
    assert np.array_equal(read_cutout_fits(body)[0], make_cutout(10, 1, "z", SIZE)[0])  # file order
    np.testing.assert_array_equal(read_cutout_fits(body, "grz"), make_cutout(10, 1, "griz", SIZE)[[0, 1, 3]])


def test_a_cutout_with_an_all_zero_z_band_is_no_measurement():
    image = read_cutout_fits(CASES / "c6_cutout_no_z_coverage.fits", "grz", 152)
    np.testing.assert_array_equal(band_coverage(image), [1.0, 1.0, 0.0])
    assert no_data_reason(image, "grz") == "no_data_in_band: z"
    assert no_data_reason(image[:2], "gr") is None


# One target per form in which the survey has no data at a position (see loopback.make_cutout).
NO_DATA = pd.DataFrame(
    {
        "TARGETID": [1, 2, 3, 4, 5, 6, 7],
        "RA": [10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6],
        "DEC": [1.0, -85.0, -77.0, -72.0, -67.0, -62.0, -50.0],
        "SHARD": 0,
    }
)


def test_each_form_of_no_data_is_missing_or_kept_and_flagged_through_the_service(server, tmp_path):
    server.inject("cutout", *[Fault("status", 404)])  # the first request: a final "not found"
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    client = fetcher(max_workers=1)
    targets = pd.concat([NO_DATA.iloc[[6]], NO_DATA.iloc[:6]], ignore_index=True)  # 7 is asked first
    download_cutout_shard(targets, 0, tmp_path, client, spec, progress=False)
    shard = read_cutout_shard(tmp_path / "shard-0.h5")
    missing = read_missing(tmp_path / "missing-0.csv").set_index("TARGETID").reason.to_dict()
    assert missing == {
        7: "http_404",
        2: "out_of_footprint",
        3: "no_data_in_band: z",
        5: "no_image",
        6: "no_data_in_band: z (not in the answer)",
    }
    assert shard.targetid.tolist() == [1, 4]  # the edge of the footprint is kept, flagged by coverage
    np.testing.assert_allclose(band_coverage(shard.image), [[1, 1, 1], [0.5, 0.5, 0.5]])


def test_dr10_cutouts_keep_griz_in_order_whatever_order_the_service_writes(server, tmp_path):
    server.cutout_band_order = "zirg"
    spec = CutoutSpec(layer="ls-dr10", bands="griz", size=SIZE, service=server.cutout_service)
    targets = pd.DataFrame({"TARGETID": [1, 2], "RA": [10.0, 10.1], "DEC": [1.0, 40.0], "SHARD": 0})
    download_cutout_shard(targets, 0, tmp_path, fetcher(), spec, progress=False)
    shard = read_cutout_shard(tmp_path / "shard-0.h5")
    assert shard.bands == "griz" and shard.targetid.tolist() == [1, 2]  # no i at DEC 40: kept
    np.testing.assert_array_equal(shard.image[0], make_cutout(10.0, 1.0, "griz", SIZE))
    np.testing.assert_array_equal(band_coverage(shard.image[1]), [1.0, 1.0, 0.0, 1.0])
    assert all("layer=ls-dr10" in r.path and "bands=griz" in r.path for r in server.requests)
    with pytest.raises(ValueError, match="the models' 'grz' among them"):
        CutoutSpec(layer="ls-dr10", bands="gri")


def test_the_retry_policy_is_urllib3s_retry_with_the_documented_waits():
    retry = RetryPolicy(attempts=4, backoff_base=1.0, backoff_max=3.0, jitter=0.0).urllib3_retry()
    failed = RequestHistory("GET", "/", None, 503, None)
    assert [retry.new(history=(failed,) * k).get_backoff_time() for k in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert retry.total == 3 and retry.is_retry("POST", 503) and retry.is_retry("GET", 425)
    assert not retry.is_retry("GET", 404)


def test_a_target_off_the_sky_is_listed_and_the_shard_completes(server, tmp_path):
    targets = pd.DataFrame({"TARGETID": [1, 2], "RA": [400.0, 10.0], "DEC": [1.0, 1.0], "SHARD": 0})
    spec = CutoutSpec(size=SIZE, service=server.cutout_service)
    download_cutout_shard(targets, 0, tmp_path, fetcher(), spec, progress=False)
    assert read_cutout_shard(tmp_path / "shard-0.h5").targetid.tolist() == [2]
    [(targetid, reason)] = read_missing(tmp_path / "missing-0.csv").values.tolist()
    assert targetid == 1 and reason.startswith("bad_position: cutout position ra=400.0")
