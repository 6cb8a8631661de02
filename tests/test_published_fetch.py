"""Fetching published model files from the hub, pinned and hash-checked, against a loopback hub."""

import hashlib

import pytest

from astroclip_pipeline.sources.hub import PublishedFileError, fetch_published, verify_published

from .loopback import Fault, LoopbackServer

REPO, FILE, REVISION = "polymathic-ai/astroclip", "astroclip.ckpt", "0123456789abcdef0123456789abcdef01234567"
DATA = bytes(range(256)) * 4096  # 1 MiB


def entry(**overrides) -> dict:
    return {"repo": REPO, "file": FILE, "revision": REVISION, "sha256": hashlib.sha256(DATA).hexdigest()} | overrides


@pytest.fixture
def hub():
    with LoopbackServer() as server:
        server.add_hub_file(REPO, REVISION, FILE, DATA)
        yield server


def test_a_pinned_file_is_fetched_and_checked(hub, tmp_path):
    record = fetch_published(entry(), tmp_path / "astroclip.ckpt", "published.astroclip", endpoint=hub.url)
    assert (tmp_path / "astroclip.ckpt").read_bytes() == DATA
    assert record["revision"] == REVISION and record["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astroclip.ckpt"]  # no staging left
    assert any(r.path == f"/{REPO}/resolve/{REVISION}/{FILE}" for r in hub.requests)


def test_a_dropped_connection_is_retried(hub, tmp_path):
    hub.inject("hub", Fault("drop"))
    fetch_published(entry(), tmp_path / "astroclip.ckpt", "published.astroclip", endpoint=hub.url)
    assert (tmp_path / "astroclip.ckpt").read_bytes() == DATA
    gets = [r for r in hub.requests if r.method == "GET"]
    assert len(gets) == 2  # huggingface_hub asked again (from byte 0 here: it had not written the half yet)


def test_a_file_with_another_hash_is_refused(hub, tmp_path):
    pinned = "ab" * 32
    with pytest.raises(PublishedFileError) as error:
        fetch_published(entry(sha256=pinned), tmp_path / "astroclip.ckpt", "published.astroclip", endpoint=hub.url)
    message = str(error.value)
    assert pinned in message and hashlib.sha256(DATA).hexdigest() in message
    assert f"{REPO}/{FILE} at revision {REVISION}" in message
    assert not (tmp_path / "astroclip.ckpt").exists()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"revision": "f" * 40}, "no such revision on the hub (published.astroclip.revision)"),
        ({"file": "other.ckpt"}, "no such file in that revision (published.astroclip.file)"),
        ({"repo": "someone/else"}, "no such repository on the hub (published.astroclip.repo)"),
        ({"revision": None}, "config key 'published.astroclip.revision' is not set"),
        ({"sha256": None}, "config key 'published.astroclip.sha256' is not set"),
    ],
)
def test_what_the_hub_does_not_have_is_named(hub, tmp_path, overrides, expected):
    with pytest.raises(PublishedFileError, match=expected.replace("(", r"\(").replace(")", r"\)")) as error:
        fetch_published(entry(**overrides), tmp_path / "astroclip.ckpt", "published.astroclip", endpoint=hub.url)
    assert "astroclip.ckpt" in str(error.value) or "other.ckpt" in str(error.value)
    assert not (tmp_path / "astroclip.ckpt").exists()


def test_a_local_copy_gets_the_same_check(tmp_path):
    (tmp_path / "copy.ckpt").write_bytes(DATA)
    record = verify_published(entry(), tmp_path / "copy.ckpt", "published.astroclip")
    assert record["path"] == str(tmp_path / "copy.ckpt") and record["source"] == "local copy"
    (tmp_path / "copy.ckpt").write_bytes(DATA[:-1])
    with pytest.raises(PublishedFileError, match="is not the pinned"):
        verify_published(entry(), tmp_path / "copy.ckpt", "published.astroclip")
    with pytest.raises(PublishedFileError, match="published.astroclip.path"):
        verify_published(entry(), tmp_path / "absent.ckpt", "published.astroclip")
