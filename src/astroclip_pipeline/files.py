"""Writing result files safely (nothing half-written is ever left under a file's real name), and
opening HDF5 files with errors that name the file and the fix."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py


class HDF5LockError(BlockingIOError):
    """An HDF5 file that HDF5's file locking would not let us open (see ``open_hdf5``)."""


def open_hdf5(path: str | os.PathLike, mode: str = "r", **kwargs) -> h5py.File:
    """``h5py.File(path, mode, **kwargs)``; a file HDF5 cannot lock raises ``HDF5LockError`` naming it.

    HDF5 (>= 1.10) locks a file while it is open: a writer excludes every other opener, a reader
    excludes writers. h5py then raises ``BlockingIOError: Unable to synchronously open file (unable
    to lock file, errno = 11, ...)`` without the file's name; on network file systems that do not
    implement locks the same message carries another errno (38, 37). Both get the file and the fix.

    Raises:
        HDF5LockError: the file is locked by another process, or locks are unsupported here.
    """
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as err:
        if not isinstance(err, BlockingIOError) and "unable to lock file" not in str(err):
            raise
        raise HDF5LockError(
            err.errno,
            f"{path}: HDF5 could not lock the file to open it (mode {mode!r}): another process holds it "
            f"open{' for writing' if mode == 'r' else ''} (a running job, a notebook, h5py or HDFView). "
            "Close that handle, or wait for the job, and rerun. On a network file system without "
            "POSIX locks (some NFS and Lustre mounts) set HDF5_USE_FILE_LOCKING=FALSE in the "
            f"environment instead. ({err})",
        ) from err


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A crash or an exception mid-write leaves the old file (if any) untouched and removes the
    partial one, so a rerun never mistakes a truncated file for a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
