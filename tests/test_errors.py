"""Errors that users cause through their environment or data name the file, key or target and the fix.

Each situation is made for real: a second process holding an HDF5 lock, a read-only install that
numba cannot write its cache into, config values that the data at hand cannot satisfy.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from astroclip_pipeline.data.galaxy_dataset import GalaxyDataset
from astroclip_pipeline.evaluate.backbone_knn import image_backbone_knn
from astroclip_pipeline.evaluate.embeddings import read_embeddings
from astroclip_pipeline.files import HDF5LockError
from astroclip_pipeline.models.specformer import SpecFormer, SpecFormerConfig, load_encoder, save_encoder
from astroclip_pipeline.sources.astroclip_hdf5 import validate_astroclip_hdf5
from astroclip_pipeline.sources.provabgs import read_provabgs
from astroclip_pipeline.train.alignment import align
from astroclip_pipeline.train.image_pretraining import pretrain_images
from astroclip_pipeline.train.spectrum_pretraining import pretrain_spectra

from .conftest import REPO

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


# Imports umap-learn the way the UMAP rule does, and says what came of it.
UMAP_CHILD = """
import numpy as np
from astroclip_pipeline.evaluate.structure import umap_projection
umap_projection(np.random.default_rng(0).normal(size=(12, 3)), 4, 0.1, 0)
"""


def test_numba_without_a_writable_cache_names_numba_cache_dir(tmp_path):
    """umap-learn from a read-only install, with a read-only home: the error names the package
    file and NUMBA_CACHE_DIR (numba's documented cache location; with it numba compiles afresh,
    20-35 s, so this test does not try it)."""
    import umap

    site, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(Path(umap.__file__).parent, site / "umap", ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    for path in (site / "umap", site, home):
        path.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([str(site), str(REPO / "src")]))
    # root writes wherever it likes: without CAP_DAC_OVERRIDE it obeys the read-only modes, as a user does
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): cannot make a directory read-only")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    run = [*prefix, sys.executable, "-c"]
    try:
        failed = subprocess.run([*run, UMAP_CHILD], env=env, capture_output=True, text=True, timeout=120)
    finally:
        for path in (site / "umap", site, home):
            path.chmod(0o755)
    assert failed.returncode != 0
    assert "cannot write its compilation cache" in failed.stderr and "Set NUMBA_CACHE_DIR" in failed.stderr
    assert str(site / "umap") in failed.stderr, failed.stderr[-2000:]


def _pretrain_spectra(data, tmp_path, settings):
    pretrain_spectra(data["train"], data["val"], tmp_path / "run", tmp_path / "out.ckpt", tmp_path / "m.csv",
                     {"preset": "laptop"}, settings)  # fmt: skip


def _pretrain_images(data, tmp_path, settings):
    pretrain_images(data["train"], data["val"], tmp_path / "run", tmp_path / "out.ckpt", tmp_path / "m.csv",
                    {"preset": "laptop", "crop": 24}, settings)  # fmt: skip


def _align(data, tmp_path, settings):
    align(data["train"], data["val"], tmp_path / "absent-spectrum.ckpt", tmp_path / "absent-image.ckpt",
          tmp_path / "run", tmp_path / "out.ckpt", tmp_path / "m.csv", settings)  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "train"),
    [("pretrain_spectra", _pretrain_spectra), ("pretrain_images", _pretrain_images), ("align", _align)],
)
def test_a_batch_larger_than_the_training_split_is_named_before_training(tiny_dataset, tmp_path, stage, train):
    """Batches drop the ragged last one: such a run would train no step and save an untrained model."""
    with h5py.File(tiny_dataset["train"]) as h5:
        n_rows = len(h5["TARGETID"])
    with pytest.raises(ValueError) as caught:
        train(tiny_dataset, tmp_path, {"batch_size": n_rows + 1})
    expected = f"config key '{stage}.batch_size': {n_rows + 1} is larger than the {n_rows} training rows of "
    assert expected + str(tiny_dataset["train"]) in str(caught.value)
    assert f"at most {n_rows}" in str(caught.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.ckpt").exists()


def test_a_knn_k_larger_than_the_reference_set_is_named_before_any_work(tiny_dataset, tmp_path):
    with h5py.File(tiny_dataset["val"]) as h5:
        n_references = len(h5["TARGETID"]) // 2
    with pytest.raises(ValueError) as caught:  # the encoder is not even read
        image_backbone_knn(tmp_path / "absent.ckpt", tiny_dataset["val"], tmp_path / "knn.csv", n_references + 1, 0)
    message = str(caught.value)
    assert (
        f"config key 'evaluation.knn_neighbours': k = {n_references + 1} is larger than the {n_references}" in message
    )
    assert str(tiny_dataset["val"]) in message and f"at most {n_references}" in message


def test_mask_chunks_that_cannot_fit_the_spectra_are_named_before_training(tiny_dataset, tmp_path):
    with pytest.raises(ValueError) as caught:
        _pretrain_spectra(tiny_dataset, tmp_path, {"batch_size": 8, "mask_chunks": 6, "mask_chunk_length": 500})
    message = str(caught.value)
    assert str(tiny_dataset["train"]) in message and "'pretrain_spectra.mask_chunk_length'" in message
    assert not (tmp_path / "run/checkpoints").exists()


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "empty"])
def test_a_model_file_cut_short_is_named(tmp_path, keep):
    """An interrupted copy or a full disk: torch says "PytorchStreamReader failed" or EOFError, without the file."""
    model = SpecFormer(SpecFormerConfig.preset("laptop", embed_dim=16, n_layers=1, n_heads=2))
    whole, cut = tmp_path / "whole.ckpt", tmp_path / "spectrum_encoder.ckpt"
    save_encoder(model, whole)
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError) as caught:
        load_encoder(cut)
    assert f"{cut}: not a complete torch file" in str(caught.value) and "copy it again" in str(caught.value)
