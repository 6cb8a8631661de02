"""The astroclip-hdf5 source on small files in the official layout (groups of images, spectra,
redshifts, targetids), from validation through the raw shards, and its resumable download."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from astroclip_pipeline.sources.astroclip_hdf5 import (
    IVAR_NOTE,
    AstroclipHdf5FormatError,
    convert_cutouts_shard,
    convert_spectra_shard,
    select_targets,
    validate_astroclip_hdf5,
    write_targets,
)
from astroclip_pipeline.sources.desi import NONFINITE_FLUX, wavelength_grid
from astroclip_pipeline.sources.http import Fetcher, RetryPolicy
from astroclip_pipeline.sources.shards import read_cutout_shard, read_missing, read_spectra_shard

from .loopback import Fault, LoopbackServer, make_provabgs_hdf5


def make_astroclip_hdf5(path: Path, groups: dict, seed: int = 0) -> Path:
    """A file laid out like astroclip_desi.1.1.5.h5: per group images (N,152,152,3) channels last,
    spectra (N,7781,1), redshifts (N,), targetids (N,). Band b of every image is filled with values
    around 10*b, so a wrong transpose shows."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        for name, ids in groups.items():
            n = len(ids)
            images = rng.normal(0, 0.01, (n, 152, 152, 3)).astype(np.float32) + np.array([0.0, 10.0, 20.0], np.float32)
            group = h5.create_group(name)
            group["images"] = images
            group["spectra"] = rng.normal(1, 0.2, (n, 7781, 1)).astype(np.float32)
            group["redshifts"] = rng.uniform(0.01, 0.5, n).astype(np.float32)
            group["targetids"] = np.asarray(ids, np.int64)
    return path


@pytest.fixture
def official(tmp_path) -> dict:
    ids = {"0": [11, 12, 13, 14, 15], "1": [21, 22, 12, 24]}  # 12 repeats across groups
    path = make_astroclip_hdf5(tmp_path / "astroclip_desi.h5", ids)
    provabgs = make_provabgs_hdf5(tmp_path / "provabgs.hdf5", [11, 12, 13, 15, 21, 22, 24, 99])  # no 14
    return {"path": path, "provabgs": provabgs, "targets": tmp_path / "targets.parquet", "dir": tmp_path}


def test_the_official_layout_validates_and_other_files_are_refused_by_name(official, tmp_path):
    validate_astroclip_hdf5(official["path"])
    with h5py.File(tmp_path / "noimages.h5", "w") as h5:
        h5.create_group("0")["targetids"] = np.arange(3)
    with pytest.raises(AstroclipHdf5FormatError, match=r"noimages\.h5: group 0 lacks \['images', 'spectra'"):
        validate_astroclip_hdf5(tmp_path / "noimages.h5")
    with h5py.File(tmp_path / "shape.h5", "w") as h5:
        group = h5.create_group("0")
        for name, shape in {"images": (2, 3, 152, 152), "spectra": (2, 7781, 1), "redshifts": (2,)}.items():
            group[name] = np.zeros(shape, np.float32)
        group["targetids"] = np.arange(2)
    with pytest.raises(AstroclipHdf5FormatError, match=r"0/images has shape \(2, 3, 152, 152\), expected"):
        validate_astroclip_hdf5(tmp_path / "shape.h5")
    (tmp_path / "page.h5").write_bytes(b"<html>time-out</html>")
    with pytest.raises(AstroclipHdf5FormatError, match=r"page\.h5: not a readable HDF5"):
        validate_astroclip_hdf5(tmp_path / "page.h5")
    with pytest.raises(AstroclipHdf5FormatError, match=r"no group\(s\) \['7'\]"):
        validate_astroclip_hdf5(official["path"], groups=["7"])


def test_targets_are_the_objects_in_provabgs_once_each_in_file_order(official):
    targets = select_targets(official["path"], official["provabgs"], targets_per_shard=3)
    # 14 has no PROVABGS row; the second 12 (group 1) is a repeat
    assert targets.TARGETID.tolist() == [11, 12, 13, 15, 21, 22, 24]
    assert targets.SHARD.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert targets.GROUP.tolist() == ["0"] * 4 + ["1"] * 3 and targets.ROW.tolist() == [0, 1, 2, 4, 0, 1, 3]
    with h5py.File(official["path"]) as h5:
        np.testing.assert_allclose(targets.Z_HP[:4], h5["0/redshifts"][[0, 1, 2, 4]])  # the file's redshift
    for column in ("RA", "DEC", "LOGMSTAR", "MAG_G", "MAG_R", "MAG_Z"):
        assert targets[column].notna().all(), column
    assert len(select_targets(official["path"], official["provabgs"], max_targets=2, groups=["1"])) == 2


def test_shards_hold_the_files_arrays_channels_first_with_placeholder_ivar(official):
    n_shards = write_targets(official["path"], official["provabgs"], official["targets"], targets_per_shard=4)
    assert n_shards == 2
    out = official["dir"]
    convert_spectra_shard(official["path"], official["targets"], 1, out / "spectra-1.h5", out / "smissing-1.csv")
    convert_cutouts_shard(official["path"], official["targets"], 1, out / "cutouts-1.h5", out / "cmissing-1.csv")
    spectra, cutouts = read_spectra_shard(out / "spectra-1.h5"), read_cutout_shard(out / "cutouts-1.h5")
    assert spectra.targetid.tolist() == cutouts.targetid.tolist() == [21, 22, 24]  # shard 1: group 1's rows
    with h5py.File(official["path"]) as h5:
        np.testing.assert_array_equal(spectra.flux, h5["1/spectra"][[0, 1, 3], :, 0])
        np.testing.assert_array_equal(cutouts.image, h5["1/images"][[0, 1, 3]].transpose(0, 3, 1, 2))
    assert cutouts.image.shape == (3, 3, 152, 152) and cutouts.bands == "grz"
    assert np.allclose(cutouts.image.mean(axis=(2, 3)), [0, 10, 20], atol=0.01)  # g, r, z planes
    np.testing.assert_array_equal(spectra.wavelength, wavelength_grid())
    assert (spectra.ivar == 1).all() and (spectra.mask == 0).all()
    with h5py.File(out / "spectra-1.h5") as h5:
        assert h5.attrs["ivar_note"] == IVAR_NOTE and h5.attrs["source"] == "astroclip-hdf5"
    assert read_missing(out / "smissing-1.csv").empty and read_missing(out / "cmissing-1.csv").empty


def test_bad_spectra_and_empty_images_are_flagged_or_listed_as_missing(official):
    with h5py.File(official["path"], "r+") as h5:
        h5["0/spectra"][1, 100, 0] = np.nan  # TARGETID 12: one pixel without a measurement
        h5["0/spectra"][4, :, 0] = np.inf  # TARGETID 15: no measurement at all
        h5["0/images"][2] = 0.0  # TARGETID 13
        h5["0/images"][4, 5, 5, 1] = np.inf  # TARGETID 15
    write_targets(official["path"], official["provabgs"], official["targets"], targets_per_shard=10)
    out = official["dir"]
    convert_spectra_shard(official["path"], official["targets"], 0, out / "s.h5", out / "sm.csv")
    convert_cutouts_shard(official["path"], official["targets"], 0, out / "c.h5", out / "cm.csv")
    assert read_missing(out / "sm.csv").values.tolist() == [[15, "no_valid_pixel"]]
    assert read_missing(out / "cm.csv").values.tolist() == [[13, "out_of_footprint"], [15, "non_finite"]]
    spectra = read_spectra_shard(out / "s.h5")
    row = spectra.targetid.tolist().index(12)
    assert spectra.flux[row, 100] == 0 and spectra.ivar[row, 100] == 0 and spectra.mask[row, 100] == NONFINITE_FLUX
    assert (spectra.ivar[row, np.arange(7781) != 100] == 1).all() and np.isfinite(spectra.flux).all()
    assert not {13, 15} & set(read_cutout_shard(out / "c.h5").targetid)
    assert pd.read_parquet(official["targets"]).SHARD.max() == 0


def test_the_file_downloads_resumably_and_is_validated(official, tmp_path):
    data = official["path"].read_bytes()
    fetcher = Fetcher(requests_per_second=None, retry=RetryPolicy(attempts=3, backoff_base=0.001))
    with LoopbackServer() as server:
        url = server.add_file("astroclip_desi.1.1.5.h5", data)
        server.inject("files", Fault("drop"))
        destination = fetcher.download_file(
            url, tmp_path / "dl" / "astroclip_desi.1.1.5.h5", validate_file=validate_astroclip_hdf5, progress=False
        )
        ranges = [r.headers.get("Range") for r in server.requests]
    assert destination.read_bytes() == data
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")  # resumed, not restarted
