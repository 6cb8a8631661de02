"""The mock survey as a source: the raw-shard contract, determinism, catalogue faults."""

import filecmp

import h5py
import numpy as np
import pandas as pd

from astroclip_pipeline.sources.desi import N_PIXELS, wavelength_grid
from astroclip_pipeline.sources.shards import read_cutout_shard, read_missing, read_spectra_shard

from .conftest import write_mock_survey


def test_same_seed_same_bytes(tiny_spec, tiny_survey, tmp_path):
    again = write_mock_survey(tiny_spec, tmp_path)
    for key in ("targets", "galaxies"):
        assert filecmp.cmp(tiny_survey[key], again[key], shallow=False), key
    for key in ("spectra", "cutouts"):
        for a, b in zip(tiny_survey[key], again[key], strict=True):
            assert filecmp.cmp(a, b, shallow=False), b


def test_other_seed_other_galaxies(tiny_spec, tiny_survey, tmp_path):
    from dataclasses import replace

    other = write_mock_survey(replace(tiny_spec, seed=tiny_spec.seed + 1), tmp_path)
    assert not np.array_equal(pd.read_parquet(other["targets"]).Z_HP, pd.read_parquet(tiny_survey["targets"]).Z_HP)


def test_raw_shards_follow_the_contract(tiny_spec, tiny_survey):
    targets = pd.read_parquet(tiny_survey["targets"])
    assert len(targets) == tiny_spec.n_galaxies
    assert targets.TARGETID.is_unique
    for column in ("TARGETID", "RA", "DEC", "Z_HP", "LOGMSTAR", "SSFR", "AGE", "Z_MW", "MAG_G", "MAG_R", "MAG_Z"):
        assert column in targets, column
    assert sorted(targets.SHARD.unique()) == [0, 1]
    delivered = []
    for i, (s_path, c_path) in enumerate(zip(tiny_survey["spectra"], tiny_survey["cutouts"], strict=True)):
        spectra, cutouts = read_spectra_shard(s_path), read_cutout_shard(c_path)
        np.testing.assert_array_equal(spectra.targetid, targets.TARGETID[targets.SHARD == i])
        np.testing.assert_array_equal(spectra.targetid, cutouts.targetid)
        np.testing.assert_allclose(spectra.wavelength, wavelength_grid(tiny_spec.rebin))
        assert spectra.flux.shape == (60, N_PIXELS // tiny_spec.rebin)
        assert spectra.flux.dtype == np.float32 and spectra.mask.dtype == np.uint32
        assert np.all(spectra.ivar[spectra.mask != 0] == 0)
        assert np.all(spectra.ivar[spectra.mask == 0] > 0)
        assert cutouts.image.shape == (60, 3, 32, 32) and cutouts.bands == "grz"
        assert abs(cutouts.pixscale - 0.262) < 1e-9
        delivered.append(spectra.targetid)
    for path in tiny_survey["missing"]:
        assert read_missing(path).empty  # the mock delivers every target
    with h5py.File(tiny_survey["spectra"][0]) as h5:
        assert h5.attrs["flux_unit"].startswith("1e-17")


def test_catalogue_has_faulty_rows_like_real_ones():
    from astroclip_pipeline.sources.mock.survey import MockSurveySpec, select_targets

    spec = MockSurveySpec(seed=1, n_galaxies=2000, galaxies_per_shard=2000, rebin=8, image_size=32)
    targets, _ = select_targets(spec)
    failed_fit = (targets.LOGMSTAR <= 0).sum()
    no_photometry = (targets[["MAG_G", "MAG_R", "MAG_Z"]] <= 0).any(axis=1).sum()
    assert 0 < failed_fit < 50 and 0 < no_photometry < 50
    assert 50 < targets.TRUTH_ARTEFACT.sum() < 160  # 5% of 2000
    assert set(targets.TRUTH_ARTEFACT_KIND) == {"none", "star", "streak", "missing"}
