"""Stage 2: cross-match, cuts, split files, and the torch Dataset over them."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from astroclip_pipeline.data.dataset_files import NonFiniteValueError, build_dataset
from astroclip_pipeline.data.galaxy_dataset import GalaxyDataset
from astroclip_pipeline.data.split import SPLITS
from astroclip_pipeline.sources.shards import read_spectra_shard, write_missing

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture(scope="module")
def dataset(tiny_survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    outputs = {s: out / f"{s}.h5" for s in SPLITS}
    counts = build_dataset(
        tiny_survey["targets"], tiny_survey["spectra"], tiny_survey["cutouts"], tiny_survey["missing"],
        outputs, out / "counts.csv", FRACTIONS,
    )  # fmt: skip
    return outputs, counts, out / "counts.csv"


def test_counts_add_up(tiny_survey, dataset):
    outputs, counts, counts_path = dataset
    targets = pd.read_parquet(tiny_survey["targets"])
    bad = (targets.LOGMSTAR <= 0) | (targets[["MAG_G", "MAG_R", "MAG_Z"]] <= 0).any(axis=1)
    table = pd.read_csv(counts_path).set_index("step")
    assert table.loc["targets selected", "remaining"] == len(targets)
    cut_rows = [s for s in table.index if s.startswith("cut ")]
    assert table.loc[cut_rows, "removed"].sum() == bad.sum()
    n_rows = {s: len(h5py.File(outputs[s])["TARGETID"]) for s in SPLITS}
    assert sum(n_rows.values()) == len(targets) - bad.sum()
    for split in SPLITS:
        assert table.loc[f"split {split}", "remaining"] == n_rows[split]


def test_rows_are_aligned_with_the_raw_shards(tiny_survey, dataset):
    outputs, _, _ = dataset
    raw = [read_spectra_shard(p) for p in tiny_survey["spectra"]]
    raw_by_id = {tid: (shard, row) for shard in raw for row, tid in enumerate(shard.targetid)}
    targets = pd.read_parquet(tiny_survey["targets"]).set_index("TARGETID")
    with h5py.File(outputs["train"]) as h5:
        for i in range(0, len(h5["TARGETID"]), 7):
            shard, row = raw_by_id[h5["TARGETID"][i]]
            np.testing.assert_array_equal(h5["spectrum"][i], shard.flux[row])
            np.testing.assert_array_equal(h5["ivar"][i] == 0, shard.mask[row] != 0)
            assert h5["Z_HP"][i] == targets.loc[h5["TARGETID"][i], "Z_HP"]
        assert h5["image"].chunks == (1, *h5["image"].shape[1:])
        assert h5.attrs["flux_unit"].startswith("1e-17") and h5.attrs["bands"] == "grz"
        assert (h5["LOGMSTAR"][()] > 0).all()


def test_missing_targets_are_counted_not_silent(tiny_survey, tmp_path):
    # Pretend the survey could not deliver one spectrum: drop it from a copy of the shard.
    from astroclip_pipeline.sources.shards import SpectraShard, write_spectra_shard

    shard = read_spectra_shard(tiny_survey["spectra"][0])
    lost = shard.targetid[0]
    kept = SpectraShard(shard.targetid[1:], shard.wavelength, shard.flux[1:], shard.ivar[1:], shard.mask[1:])
    write_spectra_shard(tmp_path / "shard-0.h5", kept, "test")
    write_missing(tmp_path / "missing.csv", pd.DataFrame({"TARGETID": [lost], "reason": ["HTTP 404"]}))
    outputs = {s: tmp_path / f"{s}.h5" for s in SPLITS}
    table = build_dataset(
        tiny_survey["targets"], [tmp_path / "shard-0.h5", tiny_survey["spectra"][1]], tiny_survey["cutouts"],
        [tmp_path / "missing.csv"], outputs, tmp_path / "counts.csv", FRACTIONS,
    ).set_index("step")  # fmt: skip
    assert table.loc["not delivered (spectrum or cutout missing)", "removed"] == 1
    assert table.loc["  of which missing: HTTP 404", "removed"] == 1
    for split in SPLITS:
        assert lost not in h5py.File(outputs[split])["TARGETID"][()]


def test_mismatched_grids_are_an_error_naming_the_file(tiny_survey, tmp_path):
    from astroclip_pipeline.sources.shards import SpectraShard, write_spectra_shard

    shard = read_spectra_shard(tiny_survey["spectra"][1])
    odd = SpectraShard(shard.targetid, shard.wavelength + 1.0, shard.flux, shard.ivar, shard.mask)
    write_spectra_shard(tmp_path / "odd.h5", odd, "test")
    outputs = {s: tmp_path / f"{s}.h5" for s in SPLITS}
    with pytest.raises(ValueError, match="odd.h5.*wavelength grid"):
        build_dataset(
            tiny_survey["targets"], [tiny_survey["spectra"][0], tmp_path / "odd.h5"], tiny_survey["cutouts"],
            tiny_survey["missing"], outputs, tmp_path / "counts.csv", FRACTIONS,
        )  # fmt: skip
    assert not any(p.exists() for p in outputs.values())  # nothing half-written is left behind


def test_torch_dataset_with_workers(dataset):
    outputs, _, _ = dataset
    data = GalaxyDataset(outputs["train"], columns=("Z_HP", "LOGMSTAR"))
    loader = torch.utils.data.DataLoader(data, batch_size=8, num_workers=2, shuffle=True)
    seen = torch.cat([batch["TARGETID"] for batch in loader])
    assert len(seen) == len(data) and len(set(seen.tolist())) == len(data)
    item = data[0]
    assert item["image"].shape == (3, 32, 32) and item["spectrum"].dtype == torch.float32
    with h5py.File(outputs["train"]) as h5:
        np.testing.assert_array_equal(item["spectrum"].numpy(), h5["spectrum"][0])
    with pytest.raises(KeyError, match="NOPE"):
        GalaxyDataset(outputs["train"], columns=("NOPE",))


def test_rows_read_into_memory_are_the_rows_read_lazily(dataset, monkeypatch):
    from astroclip_pipeline.data import galaxy_dataset

    outputs, _, _ = dataset
    columns = ("Z_HP", "LOGMSTAR")
    held = GalaxyDataset(outputs["train"], columns=columns)
    monkeypatch.setattr(galaxy_dataset, "IN_MEMORY_BYTES", 0)
    lazy = GalaxyDataset(outputs["train"], columns=columns)
    assert held._rows is not None and lazy._rows is None
    for index in range(len(lazy)):
        a, b = held[index], lazy[index]
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    held[0]["spectrum"].zero_()  # a row changed in place leaves the rows in memory as they were
    assert torch.equal(held[0]["spectrum"], lazy[0]["spectrum"])


@pytest.mark.parametrize("where", ["flux", "ivar", "image"])
def test_a_non_finite_value_with_weight_stops_the_build_naming_shard_target_and_pixel(tiny_survey, tmp_path, where):
    # A shard written around the sources' gate (write_spectra_files) with one bad value.
    from astroclip_pipeline.sources.shards import (
        CutoutShard,
        SpectraShard,
        read_cutout_shard,
        write_cutout_shard,
        write_spectra_shard,
    )

    spectra, cutouts = read_spectra_shard(tiny_survey["spectra"][0]), read_cutout_shard(tiny_survey["cutouts"][0])
    targets = pd.read_parquet(tiny_survey["targets"])
    good = targets[(targets.LOGMSTAR > 0) & (targets[["MAG_G", "MAG_R", "MAG_Z"]] > 0).all(axis=1)].TARGETID
    row = int(np.flatnonzero(np.isin(spectra.targetid, good))[0])
    pixel = int(np.flatnonzero(spectra.mask[row] == 0)[3])
    flux, ivar, image = spectra.flux.copy(), spectra.ivar.copy(), cutouts.image.copy()
    if where == "flux":
        flux[row, pixel] = np.nan
    elif where == "ivar":
        ivar[row, pixel] = np.inf
    else:
        image[int(np.flatnonzero(cutouts.targetid == spectra.targetid[row])[0]), 1, 2, 3] = np.nan
    spectra_path, cutouts_path = tmp_path / "spectra-0.h5", tmp_path / "cutouts-0.h5"
    write_spectra_shard(spectra_path, SpectraShard(spectra.targetid, spectra.wavelength, flux, ivar, spectra.mask), "t")
    write_cutout_shard(cutouts_path, CutoutShard(cutouts.targetid, image, cutouts.bands, cutouts.pixscale), "t")
    outputs = {s: tmp_path / f"{s}.h5" for s in SPLITS}
    expected_pixel = r"\(1, 2, 3\)" if where == "image" else rf"\({pixel},\)"
    message = rf"spectra-0.h5.*TARGETID {spectra.targetid[row]} .*{expected_pixel}"
    with pytest.raises(NonFiniteValueError, match=message):
        build_dataset(
            tiny_survey["targets"], [spectra_path], [cutouts_path], tiny_survey["missing"][:1],
            outputs, tmp_path / "counts.csv", FRACTIONS,
        )  # fmt: skip
    assert not any(p.exists() for p in outputs.values())


def test_a_non_finite_flux_without_weight_is_written_as_zero(tiny_survey, tmp_path):
    from astroclip_pipeline.sources.shards import SpectraShard, write_spectra_shard

    spectra = read_spectra_shard(tiny_survey["spectra"][0])
    flux, mask = spectra.flux.copy(), spectra.mask.copy()
    flux[:, 5], mask[:, 5] = np.nan, 1  # masked: the dataset gives these pixels ivar 0
    shard = SpectraShard(spectra.targetid, spectra.wavelength, flux, spectra.ivar, mask)
    write_spectra_shard(tmp_path / "s.h5", shard, "t")
    outputs = {s: tmp_path / f"{s}.h5" for s in SPLITS}
    build_dataset(
        tiny_survey["targets"], [tmp_path / "s.h5"], tiny_survey["cutouts"][:1], tiny_survey["missing"][:1],
        outputs, tmp_path / "counts.csv", FRACTIONS,
    )  # fmt: skip
    with h5py.File(outputs["train"]) as h5:
        assert np.isfinite(h5["spectrum"][()]).all()
        assert (h5["spectrum"][:, 5] == 0).all() and (h5["ivar"][:, 5] == 0).all()


def test_the_dataset_reads_g_r_z_by_name_from_any_band_set_and_records_coverage(tiny_survey, dataset, tmp_path):
    from astroclip_pipeline.sources.shards import CutoutShard, read_cutout_shard, write_cutout_shard

    paths = []
    for k, path in enumerate(tiny_survey["cutouts"]):
        cutouts = read_cutout_shard(path)
        g, r, z = cutouts.image[:, 0], cutouts.image[:, 1], cutouts.image[:, 2]
        i_band = np.zeros_like(g)  # no i data: a band the models do not read
        z[:, :, : z.shape[-1] // 4] = 0  # a quarter of z empty: kept, flagged
        shuffled = CutoutShard(cutouts.targetid, np.stack([z, g, i_band, r], axis=1), "zgir", cutouts.pixscale)
        paths.append(tmp_path / f"dr10-{k}.h5")
        write_cutout_shard(paths[-1], shuffled, "test")
    outputs = {s: tmp_path / f"{s}.h5" for s in SPLITS}
    build_dataset(
        tiny_survey["targets"], tiny_survey["spectra"], paths, tiny_survey["missing"],
        outputs, tmp_path / "counts.csv", FRACTIONS,
    )  # fmt: skip
    reference, _, _ = dataset
    with h5py.File(outputs["train"]) as h5, h5py.File(reference["train"]) as ref:
        expected = ref["image"][:5]
        expected[:, 2, :, : expected.shape[-1] // 4] = 0
        np.testing.assert_array_equal(h5["image"][:5], expected)
        assert h5.attrs["bands"] == "grz"
        # each band's fraction of non-zero pixels; the mock's chip-edge artefacts show as < 1
        image = h5["image"][()]
        for k, band in enumerate("GRZ"):
            np.testing.assert_allclose(h5[f"COVERAGE_{band}"][()], (image[:, k] != 0).mean(axis=(1, 2)))
        assert (h5["COVERAGE_Z"][()] <= 0.75).all() and np.median(h5["COVERAGE_G"][()]) == 1.0
