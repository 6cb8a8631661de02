"""The real-data sources as Snakemake runs them: the paper-scale plan offline, and desi-edr and
astroclip-hdf5 end to end against loopback services and files laid out like the real ones."""

import io
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

from astroclip_pipeline.sources.desi_coadd import EDR_ZCATALOG, healpix_coadd_path
from astroclip_pipeline.sources.provabgs import PROVABGS_URL

from .conftest import copy_workflow, run_snakemake
from .loopback import LoopbackServer, make_coadd_fits, make_provabgs_hdf5, make_sparcl_record
from .test_astroclip_hdf5 import make_astroclip_hdf5

pytestmark = pytest.mark.workflow
PROVABGS = PROVABGS_URL.split("/public/edr/")[1]
DATASETS = ["results/data/train.h5", "results/data/val.h5", "results/data/test.h5"]
HEALPIX = (10010, 10011)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("real") / "astroclip")


def _jobs(result) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", result.stdout + result.stderr, re.MULTILINE):
        counts[name] = counts.get(name, 0) + 1
    return counts


def _planned(result) -> dict[str, int]:
    """Rule -> jobs, from the job-stats table of a dry run."""
    table = (result.stdout + result.stderr).split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def _write_config(workdir: Path, name: str, config: dict) -> str:
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


# -- the paper-scale plan, offline -----------------------------------------------------------------


def test_desi_edr_preset_plans_the_whole_paper_scale_dag_offline(workdir):
    result = run_snakemake(workdir, "-n", "--configfile", "configs/desi-edr.yaml")
    jobs = _planned(result)
    for rule in ("download_desi_zcatalog", "download_provabgs", "select_desi_targets", "build_dataset"):
        assert jobs.get(rule) == 1, (rule, jobs)
    assert {"pretrain_spectra", "pretrain_images", "all"} <= set(jobs)
    assert not {"select_mock_targets", "download_astroclip_hdf5"} & set(jobs)
    # the downloads are named as in the archive
    for relative in (EDR_ZCATALOG, PROVABGS):
        assert "resources/downloads/desi/" + relative in result.stdout
    assert not (workdir / "resources").exists()  # a dry run touches nothing


def test_a_local_mirror_is_read_in_place_without_download_jobs(workdir, tmp_path):
    mirror = tmp_path / "edr"
    for relative in (EDR_ZCATALOG, PROVABGS):
        (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
        (mirror / relative).write_bytes(b"placeholder")
    config = {"source": "desi-edr", "desi": {"root": str(mirror), "spectra_backend": "coadd"}}
    result = run_snakemake(workdir, "-n", "--configfile", _write_config(workdir, "mirror.yaml", config))
    jobs = _planned(result)
    assert jobs.get("select_desi_targets") == 1
    assert not {"download_desi_zcatalog", "download_provabgs"} & set(jobs)
    assert str(mirror / EDR_ZCATALOG) in result.stdout


# -- desi-edr end to end against the loopback services ---------------------------------------------


def _zcatalog_fits(galaxies: pd.DataFrame) -> bytes:
    """An EDR redshift catalogue (ZCATALOG HDU) with the galaxies plus rows selection must drop."""
    rows = galaxies.assign(SPECTYPE="GALAXY", ZWARN=0, COADD_FIBERSTATUS=0, SV_PRIMARY=True)
    first = galaxies.iloc[0]
    rejects = pd.DataFrame(
        [
            {**first, "TARGETID": 9001, "SPECTYPE": "STAR", "ZWARN": 0, "COADD_FIBERSTATUS": 0, "SV_PRIMARY": True},
            {**first, "TARGETID": 9002, "SPECTYPE": "GALAXY", "ZWARN": 4, "COADD_FIBERSTATUS": 0, "SV_PRIMARY": True},
            {**first, "TARGETID": 9003, "SPECTYPE": "GALAXY", "ZWARN": 0, "COADD_FIBERSTATUS": 8, "SV_PRIMARY": True},
            # a second, non-primary spectrum of a selected galaxy
            {**first, "SPECTYPE": "GALAXY", "ZWARN": 0, "COADD_FIBERSTATUS": 0, "SV_PRIMARY": False},
        ]
    )
    zcat = pd.concat([rows, rejects], ignore_index=True)
    zcat["OBJTYPE"] = "TGT"
    zcat["ZCAT_PRIMARY"] = zcat.SV_PRIMARY
    zcat["ZERR"] = 1e-5
    table = Table.from_pandas(zcat)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table, name="ZCATALOG")]).writeto(buffer)
    return buffer.getvalue()


def _galaxies(n: int, first_id: int, healpix: tuple[int, int], seed: int) -> pd.DataFrame:
    """``n`` sv3/bright galaxies alternating between two healpix pixels, at random positions."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "TARGETID": np.arange(first_id, first_id + n, dtype=np.int64),
            "SURVEY": "sv3",
            "PROGRAM": "bright",
            "HEALPIX": np.where(np.arange(n) % 2 == 0, *healpix).astype(np.int64),
            "TARGET_RA": rng.uniform(150, 160, n),
            "TARGET_DEC": rng.uniform(0, 5, n),
            "Z": rng.uniform(0.05, 0.4, n),
        }
    )


@pytest.fixture(scope="module")
def edr(tmp_path_factory):
    """Loopback services holding a tiny EDR: 40 galaxies in two healpix coadds, 36 of them in
    PROVABGS, one outside the imaging footprint, one unknown to SPARCL."""
    galaxies = _galaxies(40, 1001, HEALPIX, seed=5)
    galaxies.loc[3, "TARGET_DEC"] = -85.0  # the loopback cutout service has no data there
    in_provabgs = galaxies.TARGETID[:36].tolist() + [7777]
    provabgs = make_provabgs_hdf5(tmp_path_factory.mktemp("provabgs") / "provabgs.hdf5", in_provabgs, seed=2)
    with LoopbackServer() as server:
        server.add_file(EDR_ZCATALOG, _zcatalog_fits(galaxies))
        server.add_file(PROVABGS, provabgs.read_bytes())
        for healpix in HEALPIX:
            ids = galaxies.TARGETID[galaxies.HEALPIX == healpix]
            server.add_file(healpix_coadd_path("sv3", "bright", healpix), make_coadd_fits(ids, seed=healpix))
        no_sparcl = int(galaxies.TARGETID[5])
        server.add_sparcl(
            [
                make_sparcl_record(int(t), survey="sv3", program="bright", healpix=int(h))
                for t, h in zip(galaxies.TARGETID, galaxies.HEALPIX, strict=True)
                if t != no_sparcl
            ]
        )
        yield {
            "server": server,
            "galaxies": galaxies,
            "provabgs": provabgs,
            "off_footprint": int(galaxies.TARGETID[3]),
            "no_sparcl": no_sparcl,
        }


def _edr_config(server: LoopbackServer, backend: str) -> dict:
    return {
        "source": "desi-edr",
        "desi": {
            "root": f"{server.url}/files/",
            "sparcl_url": server.sparcl_url,
            "spectra_backend": backend,
            "targets_per_shard": 16,
        },
        "legacysurvey": {"service": server.cutout_service, "size": 32},
        "downloads": {"requests_per_second": None, "backoff_base": 0.01, "attempts": 3, "max_workers": 4},
        "dataset": {"split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    }


def test_desi_edr_runs_from_the_services_to_the_dataset_files(workdir, edr):
    server = edr["server"]
    config = _write_config(workdir, "edr-sparcl.yaml", _edr_config(server, "sparcl"))
    result = run_snakemake(workdir, *DATASETS, "--configfile", config)
    jobs = _jobs(result)
    assert jobs.get("desi_spectra") == 3 and jobs.get("desi_cutouts") == 3  # 36 targets, 16 per shard
    output = result.stdout + result.stderr
    for rule in ("download_desi_zcatalog", "download_provabgs", "desi_spectra", "desi_cutouts"):
        assert re.search(rf"^\s*localrule {rule}:", output, re.MULTILINE), rule

    raw = workdir / "resources/desi-edr"
    targets = pd.read_parquet(raw / "targets.parquet")
    assert set(targets.TARGETID) == set(edr["galaxies"].TARGETID[:36])  # good galaxies with PROVABGS rows
    for column in ("RA", "DEC", "Z_HP", "LOGMSTAR", "MAG_G", "MAG_R", "MAG_Z", "SHARD"):
        assert column in targets, column
    catalogue = Table.read(edr["provabgs"], path="__astropy_table__").to_pandas(index="TARGETID")
    samples = Table.read(edr["provabgs"], path="__astropy_table__")["PROVABGS_LOGMSTAR"]
    medians = pd.Series(np.median(np.asarray(samples), axis=1), index=catalogue.index)
    np.testing.assert_allclose(targets.LOGMSTAR, medians[targets.TARGETID].to_numpy())
    z = edr["galaxies"].set_index("TARGETID").Z
    np.testing.assert_allclose(targets.Z_HP, z[targets.TARGETID].to_numpy())  # the zcatalogue's redshift

    cut_missing = pd.concat(pd.read_csv(p) for p in sorted(raw.glob("cutouts/missing-*.csv")))
    spec_missing = pd.concat(pd.read_csv(p) for p in sorted(raw.glob("spectra/missing-*.csv")))
    assert cut_missing.values.tolist() == [[edr["off_footprint"], "out_of_footprint"]]
    assert spec_missing.values.tolist() == [[edr["no_sparcl"], "not_in_sparcl"]]
    assert not list(raw.glob("cutouts/.partial-*"))  # finished shards leave no resume sidecar

    rows = 0
    for path in DATASETS:
        with h5py.File(workdir / path) as h5:
            assert h5["image"].shape[1:] == (3, 32, 32) and h5["spectrum"].shape[1] == 7781
            rows += len(h5["TARGETID"])
    assert rows == 34  # 36 targets, one without a cutout, one without a spectrum
    agents = {r.headers.get("User-Agent", "") for r in server.requests}
    assert agents and all(a.startswith("astroclip-pipeline/") for a in agents)
    assert "Nothing to be done" in run_snakemake(workdir, *DATASETS, "-n", "--configfile", config).stdout


def test_switching_to_the_coadd_backend_refetches_spectra_only(workdir, edr):
    # after the sparcl run above: the same targets and cutouts, spectra from the healpix coadds
    config = _write_config(workdir, "edr-coadd.yaml", _edr_config(edr["server"], "coadd"))
    before = len(edr["server"].requests)
    jobs = _jobs(run_snakemake(workdir, *DATASETS, "--configfile", config))
    assert jobs.get("desi_spectra") == 3 and jobs.get("build_dataset") == 1
    assert not {"desi_cutouts", "select_desi_targets", "download_desi_zcatalog"} & set(jobs)
    assert not [r for r in edr["server"].requests[before:] if r.route == "cutout"]
    raw = workdir / "resources/desi-edr"
    spec_missing = pd.concat(pd.read_csv(p) for p in sorted(raw.glob("spectra/missing-*.csv")))
    assert spec_missing.empty  # every target is in its coadd
    with h5py.File(raw / "spectra/shard-0.h5") as h5:
        assert h5.attrs["source"] == "desi-edr" and h5["flux"].shape == (16, 7781)
    rows = sum(len(h5py.File(workdir / p)["TARGETID"]) for p in DATASETS)
    assert rows == 35


# -- astroclip-hdf5 from a local copy of the file ---------------------------------------------------


def test_astroclip_hdf5_runs_from_a_local_file_to_the_dataset_files(workdir, edr, tmp_path):
    targetids = edr["galaxies"].TARGETID.to_numpy()[:30]
    official = make_astroclip_hdf5(tmp_path / "astroclip_desi.h5", {"0": targetids[:20], "1": targetids[20:]})
    config = {
        "source": "astroclip-hdf5",
        "astroclip_hdf5": {"url": str(official), "targets_per_shard": 12},
        "desi": {"root": f"{edr['server'].url}/files/"},
        "downloads": {"requests_per_second": None, "backoff_base": 0.01},
        "dataset": {"split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    }
    result = run_snakemake(workdir, *DATASETS, "--configfile", _write_config(workdir, "hdf5.yaml", config))
    jobs = _jobs(result)
    assert jobs.get("astroclip_hdf5_spectra") == 3 and jobs.get("astroclip_hdf5_cutouts") == 3
    assert "download_astroclip_hdf5" not in jobs  # a local path is read in place
    rows = 0
    for path in DATASETS:
        with h5py.File(workdir / path) as h5:
            assert h5["image"].shape[1:] == (3, 152, 152)
            rows += len(h5["TARGETID"])
    assert rows == 30  # all in PROVABGS, all delivered


# -- real data as it really comes: faults mixed into the served data (issue 17) --------------------

FAULTY_HEALPIX = (20010, 20011)


def _coadd_with_faults(ids, seed: int, faults: dict) -> bytes:
    """A coadd whose rows of some TARGETIDs are edited: ``faults`` maps TARGETID -> edit(hdul, row)."""
    with fits.open(io.BytesIO(make_coadd_fits(ids, seed=seed))) as hdul:
        rows = {int(t): k for k, t in enumerate(hdul["FIBERMAP"].data["TARGETID"])}
        for targetid, edit in faults.items():
            if targetid in rows:
                edit(hdul, rows[targetid])
        buffer = io.BytesIO()
        hdul.writeto(buffer)
    return buffer.getvalue()


def _nan_and_inf(hdul, row):
    hdul["B_FLUX"].data[row, 100:105] = np.nan  # b only
    hdul["B_FLUX"].data[row, -3:] = np.nan  # inside the b/r overlap
    hdul["R_IVAR"].data[row, 1000] = np.inf


def _no_finite_flux(hdul, row):
    for arm in "BRZ":
        hdul[f"{arm}_FLUX"].data[row] = np.nan


@pytest.fixture(scope="module")
def faulty_edr(tmp_path_factory):
    """Twelve EDR galaxies whose services answer with the faults real users meet."""
    galaxies = _galaxies(12, 2001, FAULTY_HEALPIX, seed=8)
    # the loopback cutout service's forms of "no data" (loopback.make_cutout / cutout_fits_bytes)
    galaxies.loc[galaxies.TARGETID == 2002, "TARGET_DEC"] = -77.0  # no z exposure
    galaxies.loc[galaxies.TARGETID == 2003, "TARGET_DEC"] = -72.0  # half of the stamp empty: kept
    galaxies.loc[galaxies.TARGETID == 2004, "TARGET_DEC"] = -67.0  # an answer without an image
    tmp = tmp_path_factory.mktemp("faulty")
    mag_g_masked = (galaxies.TARGETID == 2010).to_numpy()
    provabgs = make_provabgs_hdf5(tmp / "provabgs.hdf5", galaxies.TARGETID, seed=3, masked={"MAG_G": mag_g_masked})
    records = []
    for targetid, healpix in zip(galaxies.TARGETID.tolist(), galaxies.HEALPIX.tolist(), strict=True):
        record = make_sparcl_record(targetid, healpix=healpix)
        if targetid == 2005:  # observed twice: the selection chose sv3/bright
            records.append(make_sparcl_record(targetid, survey="sv1", program="other", healpix=healpix))
        if targetid == 2006:
            record["flux"][200:210], record["ivar"][300] = np.nan, np.inf
        if targetid == 2007:
            record["ivar"][:] = np.nan
        if targetid == 2008:  # only spectra the selection did not choose
            record = make_sparcl_record(targetid, survey="sv1", program="dark", healpix=healpix)
        records.append(record)
    faults = {2006: _nan_and_inf, 2007: _no_finite_flux}
    with LoopbackServer() as server:
        server.add_file(EDR_ZCATALOG, _zcatalog_fits(galaxies))
        server.add_file(PROVABGS, provabgs.read_bytes())
        for healpix in FAULTY_HEALPIX:
            ids = galaxies.TARGETID[galaxies.HEALPIX == healpix].tolist()
            ids += [2009] if 2009 in ids else []  # a target in two rows of its coadd
            path = healpix_coadd_path("sv3", "bright", healpix)
            server.add_file(path, _coadd_with_faults(ids, healpix, faults))
        server.add_sparcl(records)
        yield {"server": server, "sparcl_records": {r["sparcl_id"]: r for r in records}}


def _finite_where_weighted(workdir: Path) -> int:
    rows = 0
    for path in DATASETS:
        with h5py.File(workdir / path) as h5:
            if "TARGETID" not in h5:
                continue  # a split that got no galaxy of this tiny sample
            spectrum, ivar, image = h5["spectrum"][()], h5["ivar"][()], h5["image"][()]
            assert np.isfinite(ivar).all() and (ivar >= 0).all() and np.isfinite(image).all()
            assert np.isfinite(spectrum[ivar > 0]).all() and np.isfinite(spectrum).all()
            rows += len(h5["TARGETID"])
    return rows


def _missing(raw: Path, kind: str) -> dict[int, str]:
    frames = [pd.read_csv(p) for p in sorted(raw.glob(f"{kind}/missing-*.csv"))]
    return {int(t): r.split(":")[0] for t, r in pd.concat(frames).values.tolist()}


def test_real_data_faults_are_flagged_or_listed_and_every_shard_completes(faulty_edr, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("faulty-run") / "astroclip")
    server = faulty_edr["server"]
    config = {**_edr_config(server, "sparcl"), "legacysurvey": {"service": server.cutout_service, "size": 32}}
    config["desi"]["targets_per_shard"] = 6
    run_snakemake(workdir, *DATASETS, "--configfile", _write_config(workdir, "faulty-sparcl.yaml", config))
    raw = workdir / "resources/desi-edr"
    assert len(list(raw.glob("spectra/shard-*.h5"))) == len(list(raw.glob("cutouts/shard-*.h5"))) == 2
    assert _missing(raw, "cutouts") == {2002: "no_data_in_band", 2004: "no_image"}
    assert _missing(raw, "spectra") == {2007: "no_valid_pixel", 2008: "selected_spectrum_not_in_sparcl"}
    assert _finite_where_weighted(workdir) == 12 - 4 - 1  # 4 targets missing, 2010 cut (MAG_G masked)
    counts = pd.read_csv(workdir / "results/tables/dataset_cuts.csv").set_index("step")
    assert counts.loc["cut MAG_G > 0", "removed"] == 1
    chosen = make_sparcl_record(2005, healpix=FAULTY_HEALPIX[0])  # the sv3/bright record, not sv1's
    checked = []
    for path in DATASETS:
        with h5py.File(workdir / path) as h5:
            ids = h5["TARGETID"][()].tolist() if "TARGETID" in h5 else []
            if 2005 in ids:
                np.testing.assert_array_equal(h5["spectrum"][ids.index(2005)], chosen["flux"])
                checked.append(2005)
            if 2003 in ids:
                assert h5["COVERAGE_G"][ids.index(2003)] == 0.5  # kept, flagged
                checked.append(2003)
    assert sorted(checked) == [2003, 2005]

    config["desi"]["spectra_backend"] = "coadd"
    run_snakemake(workdir, *DATASETS, "--configfile", _write_config(workdir, "faulty-coadd.yaml", config))
    assert _missing(raw, "spectra") == {2007: "no_valid_pixel", 2009: "several_rows_in_coadd"}
    assert _finite_where_weighted(workdir) == 12 - 4 - 1
