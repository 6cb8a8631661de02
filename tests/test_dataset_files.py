"""Stage 2: cross-match, cuts, split files, and the torch Dataset over them."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from astroclip_pipeline.data.dataset_files import build_dataset
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
