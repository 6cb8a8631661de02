"""Published model files from the Hugging Face hub, pinned to a revision and checked by SHA-256.

``huggingface_hub.hf_hub_download`` does the HTTP work (the hub's ``/{repo}/resolve/{revision}/
{file}`` URLs, redirects to its storage, retrying a dropped transfer, an ``.incomplete`` file that
a later run resumes); it reads the hub's address from ``HF_ENDPOINT`` (or ``endpoint``). It does not
check a file's content against a hash the user pinned, so ``fetch_published`` does: the file is
downloaded beside the output, hashed, and renamed onto the output only when the hash is the
pinned one, so a file under the output's name is always the pinned one. ``verify_published``
applies the same check to a file the user copied by hand (offline use).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from ..files import atomic_path

HUB_URL = "https://huggingface.co"


class PublishedFileError(RuntimeError):
    """A published file that could not be fetched, or whose content is not the pinned one."""


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe(entry: dict) -> str:
    return f"{entry['repo']}/{entry['file']} at revision {entry['revision']}"


def require_pins(entry: dict, key: str) -> None:
    """A revision and a SHA-256 must be given: 'main' moves, and a file without a hash to check
    cannot be told from a changed or damaged one."""
    for pin in ("revision", "sha256"):
        if not entry.get(pin):
            raise PublishedFileError(
                f"config key '{key}.{pin}' is not set for {entry['repo']}/{entry['file']}: pin the commit "
                "(the hub's 'Files and versions' page, or `git ls-remote` of the model repository) and "
                "the file's SHA-256 (shown on the hub's page of the file, or `sha256sum` of a copy you trust)"
            )


def check_sha256(path: str | Path, entry: dict) -> str:
    """Raise unless ``path`` hashes to ``entry['sha256']``; returns the hash."""
    found = sha256_of(path)
    if found != entry["sha256"].lower():
        raise PublishedFileError(
            f"{path}: SHA-256 {found} is not the pinned {entry['sha256']} of {describe(entry)}; "
            "the file differs from the one pinned (another revision, a damaged copy): check the pins"
        )
    return found


def fetch_published(entry: dict, output: str | Path, key: str, endpoint: str | None = None) -> dict:
    """Download ``entry`` ({repo, file, revision, sha256}) to ``output`` and return its record.

    The download goes to a hidden directory beside ``output`` (kept on failure, so a rerun resumes
    it); only a file with the pinned hash is renamed onto ``output``.

    Raises:
        PublishedFileError: a pin is missing, the repository, revision or file is not on the hub, the
            transfer failed, or the content's SHA-256 is not the pinned one (each naming repo, file, revision).
    """
    require_pins(entry, key)
    output = Path(output)
    staging = output.parent / f".{output.name}.download"
    try:
        path = hf_hub_download(
            entry["repo"], entry["file"], revision=entry["revision"], local_dir=staging,
            endpoint=endpoint or os.environ.get("HF_ENDPOINT") or HUB_URL,
        )  # fmt: skip
    except RevisionNotFoundError as err:
        raise PublishedFileError(f"{describe(entry)}: no such revision on the hub ({key}.revision)") from err
    except EntryNotFoundError as err:
        raise PublishedFileError(f"{describe(entry)}: no such file in that revision ({key}.file)") from err
    except RepositoryNotFoundError as err:
        raise PublishedFileError(f"{describe(entry)}: no such repository on the hub ({key}.repo)") from err
    except (HfHubHTTPError, OSError) as err:
        raise PublishedFileError(f"{describe(entry)}: the download failed ({type(err).__name__}: {err})") from err
    check_sha256(path, entry)
    os.replace(path, output)
    shutil.rmtree(staging, ignore_errors=True)
    return record_of(entry, output, source="hub")


def verify_published(entry: dict, path: str | Path, key: str, source: str = "local copy") -> dict:
    """The record of a file the user gave by path (``{key}.path``), or of one fetched (``source``
    "hub"), after the SHA-256 check."""
    require_pins(entry, key)
    if not Path(path).is_file():
        raise PublishedFileError(f"config key '{key}.path': {path} is not a file (expected {entry['file']})")
    check_sha256(path, entry)
    return record_of(entry, path, source=source)


def record_of(entry: dict, path: str | Path, source: str) -> dict:
    return {k: entry[k] for k in ("repo", "file", "revision")} | {
        "sha256": entry["sha256"].lower(), "path": str(path), "source": source,
    }  # fmt: skip


def write_record(record: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")


def record_published(entry: dict, path: str | Path, key: str, output: str | Path, source: str) -> dict:
    """Check ``path`` against ``entry``'s pinned SHA-256 and write the record (JSON) to ``output``:
    what the conversion rules and the report read."""
    record = verify_published(entry, path, key, source)
    write_record(record, output)
    return record
