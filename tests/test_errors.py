"""Errors that users cause through their environment or data name the file, key or target and the fix.

Each situation is made for real: a second process holding an HDF5 lock, a read-only install that
numba cannot write its cache into, config values that the data at hand cannot satisfy.
"""

import shutil
import subprocess
import sys

import pytest

from astroclip_pipeline.data.galaxy_dataset import GalaxyDataset
from astroclip_pipeline.evaluate.embeddings import read_embeddings
from astroclip_pipeline.files import HDF5LockError
from astroclip_pipeline.sources.astroclip_hdf5 import validate_astroclip_hdf5
from astroclip_pipeline.sources.provabgs import read_provabgs

# Opens the file for writing, which takes HDF5's exclusive lock, says so, and holds it.
HOLDER = """
import sys, time, h5py
handle = h5py.File(sys.argv[1], "a")
print("holding", flush=True)
time.sleep(60)
"""


@pytest.fixture
def locked_file(tiny_dataset, tmp_path):
    """A copy of a dataset file that another process has open for writing."""
    path = tmp_path / "val.h5"
    shutil.copy(tiny_dataset["val"], path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield path
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "entry_point",
    [GalaxyDataset, read_embeddings, read_provabgs, validate_astroclip_hdf5],
    ids=["GalaxyDataset", "read_embeddings", "read_provabgs", "validate_astroclip_hdf5"],
)
def test_a_file_locked_by_another_process_is_named_with_the_fix(locked_file, entry_point):
    with pytest.raises(HDF5LockError) as caught:
        entry_point(locked_file)
    message = str(caught.value)
    assert str(locked_file) in message and "another process holds it open for writing" in message
    assert "Close that handle" in message and "HDF5_USE_FILE_LOCKING=FALSE" in message


def test_the_named_fix_for_file_systems_without_locks_opens_the_file(locked_file):
    """HDF5_USE_FILE_LOCKING=FALSE, the advice for network file systems, does open it."""
    reader = "import sys, h5py; print(len(h5py.File(sys.argv[1], 'r')['TARGETID']))"
    env = {"HDF5_USE_FILE_LOCKING": "FALSE", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", reader, str(locked_file)], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and int(result.stdout) > 0, result.stderr
