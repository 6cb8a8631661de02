"""SPARCL retrieval and the PROVABGS catalogue, against the loopback services."""

import json
import os
import pickle
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from astroclip_pipeline.data.cuts import apply_cuts
from astroclip_pipeline.sources.desi import NONFINITE_FLUX, wavelength_grid
from astroclip_pipeline.sources.desi_coadd import read_redshift_catalogue, select_galaxy_spectra
from astroclip_pipeline.sources.http import DownloadError, Fetcher, RetryPolicy
from astroclip_pipeline.sources.provabgs import (
    ProvabgsFormatError,
    crossmatch_provabgs,
    read_provabgs,
    validate_provabgs_file,
)
from astroclip_pipeline.sources.shards import read_missing, read_spectra_shard
from astroclip_pipeline.sources.sparcl import (
    SparclError,
    SparclService,
    retrieve_spectra,
    safe_unpickle,
    write_sparcl_spectra_shard,
)

from .loopback import Fault, LoopbackServer, make_provabgs_hdf5, make_sparcl_record


def fetcher() -> Fetcher:
    return Fetcher(max_workers=2, requests_per_second=None, retry=RetryPolicy(attempts=4, backoff_base=0.001))


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        srv.add_sparcl([make_sparcl_record(t) for t in (11, 12, 13, 14, 15)])
        yield srv


# -- SPARCL ----------------------------------------------------------------------------------------


def test_spectra_come_in_batches_in_the_order_asked_with_the_absent_listed(server):
    service = SparclService(fetcher(), server.sparcl_url)
    spectra = retrieve_spectra(service, [15, 99, 11, 13, 12], batch_size=2)
    assert spectra.targetid.tolist() == [15, 11, 13, 12] and spectra.missing == [(99, "not_in_sparcl")]
    for row, targetid in enumerate(spectra.targetid):
        record = make_sparcl_record(targetid)
        assert np.array_equal(spectra.flux[row], record["flux"])
        assert np.array_equal(spectra.mask[row], record["mask"].astype(np.uint32))
    assert np.array_equal(spectra.wavelength, wavelength_grid())
    paths = [urlsplit(r.path).path for r in server.requests]
    assert paths.count("/sparcl/api/find/") == 3 and paths.count("/sparcl/api/spectras/") == 3


def test_the_requests_speak_sparclclients_protocol_with_internal_names(server):
    service = SparclService(fetcher(), server.sparcl_url)
    retrieve_spectra(service, [11, 12], batch_size=500)
    datafields, find, spectras = server.requests
    assert urlsplit(datafields.path).path == "/sparcl/api/datafields/" and datafields.method == "GET"
    assert find.method == "POST" and parse_qs(urlsplit(find.path).query) == {"limit": ["500"]}
    assert json.loads(find.body) == {
        "outfields": ["uuid"],
        "search": [["specid", 11, 12], ["data_release_id", "DESI-EDR"]],
    }
    assert json.loads(spectras.body) == [make_sparcl_record(t)["sparcl_id"] for t in (11, 12)]
    query = parse_qs(urlsplit(spectras.path).query)
    assert query["format"] == ["pkl"] and query["dataset_list"] == ["DESI-EDR"]
    # The fake's internal names differ from the science names for sparcl_id and data_release.
    assert sorted(query["include"][0].split(",")) == ["flux", "ivar", "mask", "specid", "uuid", "wavelength"]


def test_a_version_the_module_does_not_speak_is_refused(server):
    assert SparclService(fetcher(), server.sparcl_url).check_version() == 14.2
    server.sparcl_version = "15.0"
    with pytest.raises(SparclError, match="server API version 15.0"):
        SparclService(fetcher(), server.sparcl_url).check_version()


def test_server_errors_are_retried(server):
    server.inject("sparcl", Fault("status", 503), Fault("drop"), Fault("status", 429, retry_after="0"))
    spectra = retrieve_spectra(SparclService(fetcher(), server.sparcl_url), [11, 12])
    assert spectra.targetid.tolist() == [11, 12]


def test_a_record_off_the_desi_grid_is_listed_as_missing_and_the_others_kept(server):
    server.add_sparcl([{**make_sparcl_record(16), "wavelength": 3600.0 + 0.8 * np.arange(7781) + 5.0}])
    spectra = retrieve_spectra(SparclService(fetcher(), server.sparcl_url), [11, 16])
    assert spectra.targetid.tolist() == [11]
    [(targetid, reason)] = spectra.missing
    assert targetid == 16 and reason.startswith("unusable_sparcl_record: 7781 wavelengths (3605.0-")


def test_the_unpickler_refuses_anything_but_plain_data():
    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(SparclError, match="not plain data; refused"):
        safe_unpickle(pickle.dumps([{"status": {}}, Exploit()]))
    plain = [{"status": {}}, {"flux": np.arange(3, dtype=np.float32), "z": np.float64(0.1)}]
    assert np.array_equal(safe_unpickle(pickle.dumps(plain))[1]["flux"], np.arange(3))


def test_a_sparcl_shard_has_the_raw_shard_format(server, tmp_path):
    service = SparclService(fetcher(), server.sparcl_url)
    write_sparcl_spectra_shard([12, 98, 14], tmp_path / "shard-0.h5", tmp_path / "missing-0.csv", service)
    shard = read_spectra_shard(tmp_path / "shard-0.h5")
    assert shard.targetid.tolist() == [12, 14] and shard.flux.dtype == np.float32 and shard.mask.dtype == np.uint32
    assert read_missing(tmp_path / "missing-0.csv").to_dict("list") == {"TARGETID": [98], "reason": ["not_in_sparcl"]}


def test_an_unknown_field_is_named(server):
    service = SparclService(fetcher(), server.sparcl_url)
    with pytest.raises(SparclError, match="no field 'model'"):
        service.retrieve(["x"], ["model"])


# -- PROVABGS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provabgs_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("provabgs") / "BGS_ANY_full.provabgs.sv3.v0.hdf5"
    return make_provabgs_hdf5(path, np.arange(1000, 1040), seed=2).read_bytes()


def test_the_catalogue_downloads_resumably_and_reads_with_median_stellar_mass(provabgs_bytes, tmp_path):
    with LoopbackServer() as server:
        url = server.add_file("vac/provabgs.hdf5", provabgs_bytes)
        server.inject("files", Fault("drop"))
        path = fetcher().download_file(
            url,
            tmp_path / "provabgs.hdf5",
            expected_size=len(provabgs_bytes),
            validate_file=validate_provabgs_file,
            chunk_size=4096,
            progress=False,
        )
        assert server.requests[1].headers["Range"].startswith("bytes=")
    catalogue = read_provabgs(path)
    with h5py.File(path) as h5:
        table = h5["__astropy_table__"][()]
    assert catalogue.TARGETID.tolist() == list(range(1000, 1040))
    np.testing.assert_allclose(catalogue.LOGMSTAR, np.median(table["PROVABGS_LOGMSTAR"], axis=1))
    assert {"RA", "DEC", "Z_HP", "MAG_G", "MAG_R", "MAG_Z", "IS_BGS_BRIGHT"} <= set(catalogue.columns)
    assert "PROVABGS_MCMC" not in catalogue.columns


def test_lower_case_column_names_are_accepted(tmp_path):
    path = tmp_path / "lite.hdf5"
    table = np.zeros(
        3,
        dtype=[
            ("targetid", "i8"),
            ("ra", "f8"),
            ("dec", "f8"),
            ("z_hp", "f8"),
            ("mag_g", "f4"),
            ("mag_r", "f4"),
            ("mag_z", "f4"),
            ("provabgs_logMstar", "f4", (5,)),
        ],
    )
    table["targetid"] = [1, 2, 3]
    table["provabgs_logMstar"] = np.arange(15).reshape(3, 5)
    with h5py.File(path, "w") as h5:
        h5["data"] = table
    catalogue = read_provabgs(path)
    assert catalogue.LOGMSTAR.tolist() == [2, 7, 12] and "TARGETID" in catalogue.columns


def test_files_that_are_not_the_catalogue_are_refused(provabgs_bytes, tmp_path):
    page = tmp_path / "page.hdf5"
    page.write_bytes(b"<html>Maintenance</html>")
    with pytest.raises(ProvabgsFormatError, match="not a readable HDF5 file"):
        validate_provabgs_file(page)
    with pytest.raises(ProvabgsFormatError, match=r"only \d+ bytes"):
        validate_provabgs_file(page, min_size=1 << 20)
    incomplete = tmp_path / "incomplete.hdf5"
    with h5py.File(incomplete, "w") as h5:
        h5["table"] = np.zeros(2, dtype=[("TARGETID", "i8"), ("RA", "f8")])
    with pytest.raises(ProvabgsFormatError, match=r"no column\(s\) \['DEC', 'Z_HP'"):
        validate_provabgs_file(incomplete)
    right = tmp_path / "right.hdf5"
    right.write_bytes(provabgs_bytes)
    with pytest.raises(ProvabgsFormatError, match="expected 5"):
        validate_provabgs_file(right, expected_size=5)


def test_a_catalogue_download_that_never_validates_is_reported(tmp_path):
    with LoopbackServer() as server:
        url = server.add_file("vac/provabgs.hdf5", b"<html>Maintenance</html>")
        client = Fetcher(requests_per_second=None, retry=RetryPolicy(attempts=2, backoff_base=0.001))
        with pytest.raises(DownloadError, match="not a readable HDF5 file"):
            client.download_file(url, tmp_path / "p.hdf5", validate_file=validate_provabgs_file, progress=False)


def test_crossmatch_keeps_matched_targets_in_their_order():
    targets = pd.DataFrame({"TARGETID": [5, 3, 9], "RA": [1.0, 2.0, 3.0], "SHARD": [0, 0, 1]})
    provabgs = pd.DataFrame({"TARGETID": [3, 5, 7], "RA": [9.0, 9.0, 9.0], "LOGMSTAR": [10.0, 11.0, 9.0]})
    matched = crossmatch_provabgs(targets, provabgs)
    assert matched.TARGETID.tolist() == [5, 3] and matched.LOGMSTAR.tolist() == [11.0, 10.0]
    assert matched.RA.tolist() == [1.0, 2.0]
    with pytest.raises(pd.errors.MergeError):
        crossmatch_provabgs(targets, pd.concat([provabgs, provabgs]))


# -- masked catalogue entries (issue 17, case c9) ---------------------------------------------------

CASES = Path(__file__).parent / "data" / "cases"


def test_masked_provabgs_entries_read_as_missing_and_the_cuts_count_them():
    catalogue = read_provabgs(CASES / "c9_provabgs_masked.hdf5").set_index("TARGETID")
    assert np.isnan(catalogue.loc[1002, "MAG_G"]) and catalogue.loc[1002, "MAG_R"] == pytest.approx(18.5)
    assert np.isnan(catalogue.loc[1003, "LOGMSTAR"]) and np.isfinite(catalogue.loc[1001, "LOGMSTAR"])
    keep, removed = apply_cuts(catalogue.reset_index())
    assert catalogue.index[keep].tolist() == [1001]
    assert removed == {"LOGMSTAR > 0": 1, "MAG_G > 0": 1, "MAG_R > 0": 0, "MAG_Z > 0": 0}


def test_masked_samples_leave_the_median_and_masked_flags_and_ids_are_handled(tmp_path):
    samples = np.zeros((3, 100), bool)
    samples[0, :60] = True  # 60 of row 0's samples masked: the median of the other 40
    path = make_provabgs_hdf5(
        tmp_path / "p.hdf5", [1, 2, 3], seed=4, masked={"PROVABGS_LOGMSTAR": samples, "IS_BGS_BRIGHT": [0, 1, 0]}
    )
    table = Table.read(path, path="__astropy_table__")
    catalogue = read_provabgs(path)
    expected = np.median(np.asarray(table["PROVABGS_LOGMSTAR"].data[0, 60:], np.float64))
    assert catalogue.LOGMSTAR[0] == pytest.approx(expected)
    assert catalogue.IS_BGS_BRIGHT.isna().tolist() == [False, True, False]
    with pytest.raises(ProvabgsFormatError, match="TARGETID is masked on 1 row"):
        read_provabgs(make_provabgs_hdf5(tmp_path / "q.hdf5", [1, 2, 3], masked={"TARGETID": [0, 0, 1]}))


def test_null_values_of_the_redshift_catalogue_are_missing_and_never_selected(tmp_path):
    n = 4
    table = Table(
        {
            "TARGETID": np.arange(1, n + 1, dtype=np.int64),
            "SURVEY": ["sv3"] * n, "PROGRAM": ["bright"] * n, "HEALPIX": np.full(n, 7, np.int64),
            "TARGET_RA": np.ones(n), "TARGET_DEC": np.ones(n),
            "Z": [0.1, np.nan, 0.3, 0.4], "ZERR": np.full(n, 1e-5),
            "ZWARN": np.zeros(n, np.int64), "SPECTYPE": ["GALAXY"] * n,
            "COADD_FIBERSTATUS": np.zeros(n, np.int32), "OBJTYPE": ["TGT"] * n,
            "SV_PRIMARY": np.ones(n, bool), "ZCAT_PRIMARY": np.ones(n, bool),
        },
        masked=True,
    )  # fmt: skip
    table["ZWARN"].mask = [False, False, True, False]  # written as the FITS null value (TNULL)
    table["ZWARN"].fill_value = -99
    hdu = fits.table_to_hdu(table)
    hdu.name = "ZCATALOG"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "zcat.fits")
    zcat = read_redshift_catalogue(tmp_path / "zcat.fits")
    assert zcat.ZWARN.isna().tolist() == [False, False, True, False] and np.isnan(zcat.Z[1])
    assert select_galaxy_spectra(zcat).TARGETID.tolist() == [1, 4]


# -- several records per target, per-target faults (issue 17, case c5) -----------------------------


def test_two_records_of_one_target_without_identity_fields_list_it_and_keep_the_rest(tmp_path):
    case = CASES / "c5_sparcl"
    fields = {f["newdp"]: f["origdp"] for f in json.loads((case / "datafields.json").read_text())}
    science = {internal: name for name, internal in fields.items()}
    answer = safe_unpickle((case / "spectras.pkl").read_bytes())
    records = [{science.get(k, k): v for k, v in r.items()} for r in answer[1:]]
    with LoopbackServer(sparcl_version=(case / "version.txt").read_text().strip()) as srv:
        srv.sparcl_fields = fields
        srv.add_sparcl(records)
        service = SparclService(fetcher(), srv.sparcl_url)
        targets = pd.DataFrame(
            {"TARGETID": [39627752092991638, 39627752092991639], "SURVEY": "sv3", "PROGRAM": "bright", "HEALPIX": 7}
        )
        write_sparcl_spectra_shard(targets, tmp_path / "shard-0.h5", tmp_path / "missing-0.csv", service)
    shard = read_spectra_shard(tmp_path / "shard-0.h5")
    assert shard.targetid.tolist() == [39627752092991639]
    np.testing.assert_array_equal(shard.flux[0], records[2]["flux"])
    [(targetid, reason)] = read_missing(tmp_path / "missing-0.csv").values.tolist()
    assert targetid == 39627752092991638
    assert reason.startswith("several_sparcl_records: 2 records and the data set has no survey/program/healpix")


def test_the_record_of_the_selected_spectrum_is_used_and_every_per_target_fault_is_listed(tmp_path):
    targets = pd.DataFrame(
        {
            "TARGETID": [21, 22, 23, 24, 25],
            "SURVEY": ["sv3", "sv1", "sv3", "sv3", "sv3"],
            "PROGRAM": ["bright", "dark", "bright", "bright", "bright"],
            "HEALPIX": [7, 7, 7, 7, 7],
        }
    )
    nan_pixel = make_sparcl_record(23, healpix=7)
    nan_pixel["flux"][100] = np.nan
    no_valid = make_sparcl_record(24, healpix=7)
    no_valid["ivar"][:] = np.inf
    with LoopbackServer() as srv:
        srv.add_sparcl(
            [
                make_sparcl_record(21, survey="sv1", program="other", healpix=7),  # observed twice:
                make_sparcl_record(21, survey="sv3", program="bright", healpix=7),  # the selection chose this one
                make_sparcl_record(22, survey="sv3", program="bright", healpix=7),  # not the one selected
                nan_pixel,
                no_valid,
                {**make_sparcl_record(25, healpix=7), "flux": np.ones(10, np.float32)},
            ]
        )
        service = SparclService(fetcher(), srv.sparcl_url)
        write_sparcl_spectra_shard(targets, tmp_path / "shard-0.h5", tmp_path / "missing-0.csv", service)
    shard = read_spectra_shard(tmp_path / "shard-0.h5")
    assert shard.targetid.tolist() == [21, 23]
    np.testing.assert_array_equal(shard.flux[0], make_sparcl_record(21, survey="sv3", healpix=7)["flux"])
    assert shard.ivar[1, 100] == 0 and shard.mask[1, 100] & NONFINITE_FLUX and np.isfinite(shard.flux).all()
    missing = read_missing(tmp_path / "missing-0.csv").set_index("TARGETID").reason
    assert missing[22].startswith("selected_spectrum_not_in_sparcl: selected {'survey': 'sv1', 'program': 'dark'")
    assert missing[24] == "no_valid_pixel"
    assert missing[25].startswith("unusable_sparcl_record: array shapes")
