"""DESI coadd and redshift-catalogue readers, on the real sample files and on generated ones."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from astroclip_pipeline.sources.desi import BAD_IVAR, NO_WEIGHT, NONFINITE_FLUX, flag_invalid_pixels, wavelength_grid
from astroclip_pipeline.sources.desi_coadd import (
    coadd_groups,
    combine_arms,
    healpix_coadd_location,
    healpix_coadd_path,
    read_coadd,
    read_redshift_catalogue,
    select_galaxy_spectra,
    write_coadd_spectra_shard,
)
from astroclip_pipeline.sources.shards import read_missing, read_spectra_shard

from .loopback import LoopbackServer, arm_wavelengths, make_coadd_fits

DATA = Path(__file__).parent / "data" / "desi"
REAL_COADD = DATA / "coadd-4-80613-thru20210324.fits"
REAL_REDROCK = DATA / "redrock-4-80613-thru20210324.fits"
REAL_TARGETID = 39633345008634465


def raw_arms(path: Path, row: int = 0) -> dict:
    """Each arm's wavelength, flux, ivar and mask of one row, read plainly with astropy."""
    with fits.open(path) as hdul:
        return {
            arm: tuple(
                np.asarray(
                    hdul[f"{arm.upper()}_{name}"].data
                    if name == "WAVELENGTH"
                    else hdul[f"{arm.upper()}_{name}"].data[row],
                    dtype=np.float64,
                )
                for name in ("WAVELENGTH", "FLUX", "IVAR", "MASK")
            )
            for arm in "brz"
        }


def expected_combination(arms: dict) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean over the arms covering each grid pixel, masked pixels left
    out; where every contribution is masked, the unmasked mean (desispec's fallback)."""
    grid = wavelength_grid()
    sums = {kind: (np.zeros(len(grid)), np.zeros(len(grid))) for kind in ("masked", "unmasked")}
    for wave, flux, ivar, mask in arms.values():
        index = np.rint((wave - grid[0]) / 0.8).astype(int)
        for kind, weight in (("masked", ivar * (mask == 0)), ("unmasked", ivar)):
            np.add.at(sums[kind][0], index, weight * flux)
            np.add.at(sums[kind][1], index, weight)
    weighted, total = sums["masked"]
    fallback = total == 0
    weighted[fallback], total[fallback] = sums["unmasked"][0][fallback], sums["unmasked"][1][fallback]
    return weighted / np.where(total > 0, total, 1), total


# -- the real sample -------------------------------------------------------------------------------


def test_real_coadd_is_read_onto_the_desi_grid():
    spectra = read_coadd(REAL_COADD, [REAL_TARGETID], desi_grid=True)
    assert spectra.flux.shape == spectra.ivar.shape == spectra.mask.shape == (1, 7781)
    assert spectra.flux.dtype == spectra.ivar.dtype == np.float32 and spectra.mask.dtype == np.uint32
    assert np.array_equal(spectra.wavelength, wavelength_grid())
    assert list(spectra.targetid) == [REAL_TARGETID]
    assert np.isfinite(spectra.flux).all() and (spectra.ivar >= 0).all()


def test_real_coadd_overlaps_are_inverse_variance_means_and_the_rest_is_untouched():
    arms = raw_arms(REAL_COADD)
    spectra = read_coadd(REAL_COADD, [REAL_TARGETID])
    flux, ivar = expected_combination(arms)
    np.testing.assert_allclose(spectra.flux[0], flux, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(spectra.ivar[0], ivar, rtol=2e-6)
    # The two overlaps: 51 pixels b/r and 126 pixels r/z, where two arms contribute.
    b_wave, b_flux = arms["b"][0], arms["b"][1]
    overlap = np.isin(np.rint(b_wave / 0.8), np.rint(arms["r"][0] / 0.8))
    assert overlap.sum() == 51
    # Outside the overlaps a pixel is the one arm's value, unchanged.
    assert np.array_equal(spectra.flux[0, :2700], b_flux[:2700].astype(np.float32))


def test_a_targetid_not_in_the_coadd_is_named_with_the_file():
    with pytest.raises(KeyError, match=rf"{REAL_COADD.name}.*TARGETID\(s\) 42 not in this coadd"):
        read_coadd(REAL_COADD, [REAL_TARGETID, 42])


def test_real_redrock_file_gives_the_redshift_columns():
    catalogue = read_redshift_catalogue(REAL_REDROCK, ("TARGETID", "Z", "ZWARN", "SPECTYPE"), hdu="REDSHIFTS")
    with fits.open(REAL_REDROCK) as hdul:
        direct = hdul["REDSHIFTS"].data
        assert catalogue.TARGETID.tolist() == direct["TARGETID"].tolist()
        assert catalogue.Z.tolist() == direct["Z"].tolist()
    assert catalogue.SPECTYPE.tolist() == ["GALAXY"] and catalogue.Z.dtype.byteorder in "=|"


def test_absent_catalogue_columns_and_hdus_are_named(tmp_path):
    with pytest.raises(KeyError, match=r"no column\(s\) \['SV_PRIMARY'\]"):
        read_redshift_catalogue(REAL_REDROCK, ("TARGETID", "SV_PRIMARY"), hdu="REDSHIFTS")
    with pytest.raises(KeyError, match="no HDU ZCATALOG"):
        read_redshift_catalogue(REAL_REDROCK)


# -- the arm combination rules ---------------------------------------------------------------------


def three_arms(n_rows=2):
    waves = {arm: arm_wavelengths(arm) for arm in "brz"}
    flux_values, ivar_values = {"b": 1, "r": 2, "z": 4}, {"b": 1, "r": 3, "z": 1}
    fluxes = {arm: np.full((n_rows, len(w)), flux_values[arm], np.float32) for arm, w in waves.items()}
    ivars = {arm: np.full((n_rows, len(w)), ivar_values[arm], np.float32) for arm, w in waves.items()}
    masks = {arm: np.zeros((n_rows, len(w)), np.uint32) for arm, w in waves.items()}
    return waves, fluxes, ivars, masks


def test_overlap_pixels_are_weighted_by_inverse_variance():
    wave, flux, ivar, mask = combine_arms(*three_arms())
    assert len(wave) == 7781 and np.abs(wave - wavelength_grid()).max() < 1e-6
    br, rz = 2720, 4950  # one pixel inside each overlap (b/r: 2700-2750, r/z: 4900-5025)
    assert flux[0, br] == pytest.approx((1 * 1 + 2 * 3) / 4) and ivar[0, br] == 4
    assert flux[0, rz] == pytest.approx((2 * 3 + 4 * 1) / 4) and ivar[0, rz] == 4
    assert flux[0, 100] == 1 and flux[0, 4000] == 2 and flux[0, 7700] == 4 and not mask.any()


def test_a_pixel_masked_in_one_arm_takes_the_other_arm_and_a_clean_mask():
    waves, fluxes, ivars, masks = three_arms()
    masks["b"][0, -5] = 16  # inside the b/r overlap
    _, flux, ivar, mask = combine_arms(waves, fluxes, ivars, masks)
    assert flux[0, 2750 - 4] == 2 and ivar[0, 2750 - 4] == 3 and mask[0, 2750 - 4] == 0
    assert flux[1, 2750 - 4] == pytest.approx(7 / 4)


def test_a_pixel_masked_everywhere_keeps_the_unmasked_mean_and_the_or_of_the_masks():
    waves, fluxes, ivars, masks = three_arms()
    masks["b"][0, -5], masks["r"][0, 50 - 4] = 16, 1 << 31
    masks["b"][0, 10] = 4  # covered by b alone
    _, flux, ivar, mask = combine_arms(waves, fluxes, ivars, masks)
    assert flux[0, 2746] == pytest.approx(7 / 4) and ivar[0, 2746] == 4 and mask[0, 2746] == 16 | (1 << 31)
    assert flux[0, 10] == 1 and ivar[0, 10] == 1 and mask[0, 10] == 4


def test_zero_ivar_everywhere_gives_zero_flux_not_nan():
    waves, fluxes, ivars, masks = three_arms()
    ivars["b"][0] = 0
    _, flux, ivar, _ = combine_arms(waves, fluxes, ivars, masks)
    assert np.isfinite(flux).all() and flux[0, 10] == 0 and ivar[0, 10] == 0


def test_arms_off_the_joined_grid_are_refused():
    waves, fluxes, ivars, masks = three_arms()
    waves["r"] = waves["r"] + 0.3
    with pytest.raises(ValueError, match="arm r: its wavelengths do not fall on the joined grid"):
        combine_arms(waves, fluxes, ivars, masks)


# -- the archive layout, local and over HTTP -------------------------------------------------------


def test_healpix_coadd_paths_follow_the_archive_layout(tmp_path):
    assert healpix_coadd_path("sv3", "bright", 26278) == (
        "spectro/redux/fuji/healpix/sv3/bright/262/26278/coadd-sv3-bright-26278.fits"
    )
    assert healpix_coadd_location("https://data.desi.lbl.gov/public/edr", "sv1", "dark", 7) == (
        "https://data.desi.lbl.gov/public/edr/spectro/redux/fuji/healpix/sv1/dark/0/7/coadd-sv1-dark-7.fits"
    )
    assert healpix_coadd_location(tmp_path, "sv1", "dark", 7) == str(
        tmp_path / "spectro/redux/fuji/healpix/sv1/dark/0/7/coadd-sv1-dark-7.fits"
    )


def mirror(root: Path, survey: str, program: str, healpix: int, data: bytes) -> Path:
    path = Path(healpix_coadd_location(root, survey, program, healpix))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_coadd_reads_the_same_from_a_local_mirror_and_over_http(tmp_path):
    data = make_coadd_fits([11, 12, 13, 14], seed=3)
    local = read_coadd(mirror(tmp_path, "sv3", "bright", 10016, data), [14, 11, 13])
    with LoopbackServer() as server:
        server.add_file(healpix_coadd_path("sv3", "bright", 10016), data)
        remote = read_coadd(healpix_coadd_location(f"{server.url}/files", "sv3", "bright", 10016), [14, 11, 13])
        assert all("Range" in r.headers for r in server.requests[1:])  # only parts of the file are read
        assert server.requests[0].headers["User-Agent"].startswith("astroclip-pipeline/")
    for name in ("targetid", "flux", "ivar", "mask"):
        assert np.array_equal(getattr(local, name), getattr(remote, name))
    assert list(local.targetid) == [14, 11, 13]
    # The uint32 mask survives FITS's signed storage, and rows come back in the order asked for.
    path = tmp_path / healpix_coadd_path("sv3", "bright", 10016)
    with fits.open(path) as hdul:
        assert hdul["B_MASK"].data.dtype == np.uint32 and (hdul["B_MASK"].data == 1 << 31).any()
    arms = raw_arms(path, row=3)
    assert local.mask.max() == 1 << 31
    flux, _ = expected_combination(arms)
    np.testing.assert_allclose(local.flux[0], flux, rtol=2e-6, atol=1e-6)


def test_the_b_arm_masked_in_the_overlap_leaves_the_r_arm_value(tmp_path):
    path = tmp_path / "coadd.fits"
    path.write_bytes(make_coadd_fits([21, 22], seed=1))
    with fits.open(path) as hdul:
        r_flux = hdul["R_FLUX"].data[0]
    spectra = read_coadd(path, [21])
    # make_coadd_fits masks the last 10 b pixels of the first row, which the r arm also covers.
    np.testing.assert_array_equal(spectra.flux[0, 2741:2751], r_flux[41:51])


# -- target selection and shards -------------------------------------------------------------------


def zcatalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "TARGETID": [1, 2, 3, 4, 5, 6, 7, -8, 1],
            "SURVEY": ["sv3", "sv3", "sv1", "sv3", "sv3", "sv3", "sv1", "sv3", "sv1"],
            "PROGRAM": ["bright"] * 9,
            "HEALPIX": [100, 100, 205, 100, 100, 100, 205, 100, 205],
            "COADD_FIBERSTATUS": [0, 0, 0, 8, 0, 0, 0, 0, 0],
            "SV_PRIMARY": [True, True, True, True, False, True, True, True, False],
            "SPECTYPE": ["GALAXY", "GALAXY", "GALAXY ", "GALAXY", "GALAXY", "STAR", "GALAXY", "GALAXY", "GALAXY"],
            "ZWARN": [0, 4, 0, 0, 0, 0, 0, 0, 0],
        }
    )


def test_selection_keeps_good_primary_galaxy_spectra_once_each():
    selected = select_galaxy_spectra(zcatalogue())
    assert selected.TARGETID.tolist() == [1, 3, 7]
    assert select_galaxy_spectra(zcatalogue(), surveys=["sv1"]).TARGETID.tolist() == [3, 7]
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['ZCAT_PRIMARY'\]"):
        select_galaxy_spectra(zcatalogue(), primary_column="ZCAT_PRIMARY")
    both_primary = zcatalogue().assign(SV_PRIMARY=True)
    with pytest.raises(ValueError, match=r"more than one spectrum of TARGETID\(s\) \[1\]"):
        select_galaxy_spectra(both_primary.assign(COADD_FIBERSTATUS=0, ZWARN=0, SPECTYPE="GALAXY"))


def test_a_zcatalogue_fits_file_reads_and_selects(tmp_path):
    catalogue = zcatalogue()
    table = Table.from_pandas(
        catalogue.assign(
            TARGET_RA=1.0, TARGET_DEC=2.0, Z=0.1, ZERR=1e-5, OBJTYPE="TGT", ZCAT_PRIMARY=catalogue.SV_PRIMARY
        )
    )
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table, name="ZCATALOG")]).writeto(tmp_path / "zall.fits")
    read = read_redshift_catalogue(tmp_path / "zall.fits")
    assert read.SPECTYPE.tolist()[2] == "GALAXY"  # FITS strings come back stripped
    assert select_galaxy_spectra(read).TARGETID.tolist() == [1, 3, 7]


def test_a_spectra_shard_is_written_from_the_coadds_in_target_order(tmp_path):
    mirror(tmp_path, "sv3", "bright", 100, make_coadd_fits([1, 2, 9], seed=1))
    targets = pd.DataFrame(
        {
            "TARGETID": [9, 3, 1, 77],
            "SURVEY": ["sv3", "sv1", "sv3", "sv3"],
            "PROGRAM": "bright",
            "HEALPIX": [100, 205, 100, 100],
        }
    )
    assert {k: v.tolist() for k, v in coadd_groups(targets).items()} == {
        ("sv1", "bright", 205): [3],
        ("sv3", "bright", 100): [9, 1, 77],
    }
    write_coadd_spectra_shard(targets, tmp_path, tmp_path / "spectra/shard-0.h5", tmp_path / "spectra/missing-0.csv")
    shard = read_spectra_shard(tmp_path / "spectra/shard-0.h5")
    direct = read_coadd(healpix_coadd_location(tmp_path, "sv3", "bright", 100), [9, 1])
    assert shard.targetid.tolist() == [9, 1] and np.array_equal(shard.flux, direct.flux)
    assert np.array_equal(shard.wavelength, wavelength_grid()) and shard.mask.dtype == np.uint32
    missing = read_missing(tmp_path / "spectra/missing-0.csv")
    assert missing.TARGETID.tolist() == [3, 77]
    assert missing.reason[0].startswith("coadd_not_found") and missing.reason[1].startswith("not_in_coadd")


# -- invalid pixels (issue 17, case c1) ------------------------------------------------------------

CASES = Path(__file__).parent / "data" / "cases"


def _pixel(wavelength: float) -> int:
    return int(np.argmin(np.abs(wavelength_grid() - wavelength)))


def test_a_coadd_with_nan_flux_and_infinite_ivar_gives_flagged_pixels_and_keeps_the_good_arm():
    spectra = read_coadd(CASES / "c1_coadd_nonfinite.fits", [REAL_TARGETID])
    clean = read_coadd(REAL_COADD, [REAL_TARGETID])
    flux, ivar, mask = spectra.flux[0], spectra.ivar[0], spectra.mask[0]
    assert np.isfinite(flux).all() and np.isfinite(ivar).all()
    b_only, r_only = _pixel(4000.0), _pixel(6500.0)
    assert ivar[b_only] == 0 and flux[b_only] == 0 and mask[b_only] & NONFINITE_FLUX
    assert ivar[r_only] == 0 and mask[r_only] & BAD_IVAR
    # in the b/r overlap the valid r arm alone gives the value
    arms = raw_arms(REAL_COADD)
    overlap = _pixel(5780.0)
    r_wave, r_flux, r_ivar, r_mask = arms["r"]
    r_index = int(np.argmin(np.abs(r_wave - 5780.0)))
    assert r_mask[r_index] == 0 and mask[overlap] == 0
    assert flux[overlap] == pytest.approx(r_flux[r_index], rel=1e-6)
    assert ivar[overlap] == pytest.approx(r_ivar[r_index], rel=1e-6)
    # every other pixel is the clean file's
    others = np.setdiff1d(np.arange(len(flux)), [b_only, r_only, overlap])
    np.testing.assert_array_equal(flux[others], clean.flux[0][others])
    np.testing.assert_array_equal(mask[others], clean.mask[0][others])


@pytest.mark.parametrize(
    ("flux", "ivar", "mask", "bit"),
    [
        (np.nan, 1.0, 0, NONFINITE_FLUX),
        (np.inf, 1.0, 0, NONFINITE_FLUX),
        (-np.inf, 1.0, 4, NONFINITE_FLUX),
        (1e39, 1.0, 0, NONFINITE_FLUX),  # finite in float64, infinite as float32
        (1.0, np.nan, 0, BAD_IVAR),
        (1.0, np.inf, 0, BAD_IVAR),
        (1.0, -2.0, 0, BAD_IVAR),
        (1.0, 0.0, 0, NO_WEIGHT),
    ],
)
def test_every_kind_of_invalid_pixel_gets_ivar_zero_and_its_bit(flux, ivar, mask, bit):
    values = np.array([[1.0, flux, 2.0]])
    ivars = np.array([[1.0, ivar, 1.0]])
    masks = np.array([[0, mask, 0]])
    out_flux, out_ivar, out_mask = flag_invalid_pixels(values, ivars, masks)
    assert np.isfinite(out_flux).all() and np.isfinite(out_ivar).all()
    assert out_ivar[0, 1] == 0 and out_mask[0, 1] & bit and out_mask[0, 1] & mask == mask
    assert out_flux.dtype == out_ivar.dtype == np.float32 and out_mask.dtype == np.uint32
    np.testing.assert_array_equal(out_ivar[0, [0, 2]], [1.0, 1.0])  # the valid pixels untouched
    np.testing.assert_array_equal(out_mask[0, [0, 2]], [0, 0])


def test_an_invalid_arm_never_spoils_the_overlap_whichever_arm_it_is():
    waves, fluxes, ivars, masks = three_arms()
    overlap_b = np.flatnonzero(waves["b"] >= waves["r"][0] - 1e-6)[:3]
    overlap_r = np.arange(3)
    for bad_arm, good_arm, bad_pix, good_pix in (("b", "r", overlap_b, overlap_r), ("r", "b", overlap_r, overlap_b)):
        f = {arm: fluxes[arm].copy() for arm in fluxes}
        i = {arm: ivars[arm].copy() for arm in ivars}
        f[bad_arm][0, bad_pix[0]] = np.nan
        i[bad_arm][0, bad_pix[1]] = np.inf
        i[bad_arm][0, bad_pix[2]] = -1.0
        wave, flux, ivar, mask = combine_arms(waves, f, i, masks)
        where = np.searchsorted(wave, waves[good_arm][good_pix])
        np.testing.assert_allclose(flux[0, where], fluxes[good_arm][0, good_pix], rtol=1e-6)
        np.testing.assert_allclose(ivar[0, where], ivars[good_arm][0, good_pix], rtol=1e-6)
        assert not mask[0, where].any()


def test_coadd_arm_combination_matches_desispec_coadd_cameras_on_the_real_coadd():
    coaddition = pytest.importorskip("desispec.coaddition", reason="desispec (test-only dependency) not installed")
    from desispec.io import read_spectra

    reference = coaddition.coadd_cameras(read_spectra(str(REAL_COADD)))
    ours = read_coadd(REAL_COADD, [REAL_TARGETID])
    np.testing.assert_allclose(reference.wave["brz"], wavelength_grid(), atol=1e-4)
    np.testing.assert_allclose(ours.flux[0], reference.flux["brz"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.ivar[0], reference.ivar["brz"][0], rtol=1e-5)
    pipeline_bits = NONFINITE_FLUX | BAD_IVAR | NO_WEIGHT
    np.testing.assert_array_equal(ours.mask[0] & ~np.uint32(pipeline_bits), reference.mask["brz"][0])


def test_one_bad_target_never_aborts_a_coadd_shard(tmp_path):
    path = mirror(tmp_path, "sv3", "bright", 100, make_coadd_fits([1, 2, 2, 5, 9], seed=1))
    with fits.open(path, mode="update") as hdul:
        for arm in "BRZ":
            hdul[f"{arm}_FLUX"].data[3] = np.nan  # TARGETID 5: no finite flux in any arm
    targets = pd.DataFrame({"TARGETID": [9, 2, 5, 1], "SURVEY": "sv3", "PROGRAM": "bright", "HEALPIX": 100})
    write_coadd_spectra_shard(targets, tmp_path, tmp_path / "shard-0.h5", tmp_path / "missing-0.csv")
    shard = read_spectra_shard(tmp_path / "shard-0.h5")
    assert shard.targetid.tolist() == [9, 1]
    assert np.isfinite(shard.flux).all() and np.isfinite(shard.ivar).all()
    missing = read_missing(tmp_path / "missing-0.csv").set_index("TARGETID").reason
    assert missing[2].startswith("several_rows_in_coadd: 2 rows") and missing[5] == "no_valid_pixel"


# -- any valid spectra file (issue 17, part 5) ------------------------------------------------------


def _edited_coadd(path: Path, edit) -> Path:
    with fits.open(io.BytesIO(make_coadd_fits([1, 2], seed=3))) as hdul:
        hdus = fits.HDUList([hdu.copy() for hdu in edit(hdul)])
        hdus.writeto(path)
    return path


def test_a_spectra_file_with_other_cameras_is_read_and_the_desi_grid_is_checked_only_when_asked(tmp_path):
    path = _edited_coadd(tmp_path / "coadd.fits", lambda hdul: [h for h in hdul if not h.name.startswith("Z_")])
    spectra = read_coadd(path, [2])
    assert spectra.wavelength[0] == 3600.0 and spectra.wavelength[-1] == pytest.approx(5760.0 + 0.8 * 2325)
    assert spectra.flux.shape == (1, len(spectra.wavelength))
    with pytest.raises(ValueError, match=r"coadd.fits: the joined arms give 5026 pixels .* expected the DESI grid"):
        read_coadd(path, [2], desi_grid=True)


def test_flux_units_are_converted_by_astropy_and_a_file_without_masks_is_read(tmp_path):
    def to_cgs(hdul):
        for arm in "BRZ":
            hdul[f"{arm}_FLUX"].data = hdul[f"{arm}_FLUX"].data * 1e-17
            hdul[f"{arm}_FLUX"].header["BUNIT"] = "erg/(s cm2 Angstrom)"
            hdul[f"{arm}_IVAR"].data = hdul[f"{arm}_IVAR"].data * 1e34
        return hdul

    reference = read_coadd(_edited_coadd(tmp_path / "desi.fits", lambda hdul: hdul), [1])
    converted = read_coadd(_edited_coadd(tmp_path / "cgs.fits", to_cgs), [1])
    np.testing.assert_allclose(converted.flux, reference.flux, rtol=1e-5)
    np.testing.assert_allclose(converted.ivar, reference.ivar, rtol=1e-4)
    np.testing.assert_array_equal(converted.mask, reference.mask)
    without_masks = _edited_coadd(tmp_path / "nomask.fits", lambda hdul: [h for h in hdul if "_MASK" not in h.name])
    unmasked = read_coadd(without_masks, [1])
    assert unmasked.flux.shape == (1, 7781) and not unmasked.mask.any()  # no MASK HDUs: no survey bits

    def in_adu(hdul):
        hdul["B_FLUX"].header["BUNIT"] = "adu"
        return hdul

    with pytest.raises(ValueError, match=r"\[B_FLUX\]: BUNIT 'adu' is not a flux density"):
        read_coadd(_edited_coadd(tmp_path / "adu.fits", in_adu), [1])
