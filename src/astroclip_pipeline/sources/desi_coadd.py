"""DESI EDR coadded spectra: the archive layout, the b/r/z arm combination, the redshift catalogue.

A healpix coadd file (``coadd-{survey}-{program}-{healpix}.fits``) holds, per arm b, r and z,
``{ARM}_WAVELENGTH`` (n_pix,), ``{ARM}_FLUX`` and ``{ARM}_IVAR`` (n_rows, n_pix) float32 in
1e-17 erg/s/cm²/Å, ``{ARM}_MASK`` (uint32 in EDR, int32 in some later files) and a FIBERMAP
table whose row order is the spectra's. :func:`read_coadd` reads only the rows asked for and
joins the three arms onto the 7781-pixel grid of ``desi.py`` exactly as desispec does.

How desispec joins the arms (``desispec.coaddition.coadd_cameras``, read in desihub/desispec
py/desispec/coaddition.py; reproduced by :func:`combine_arms` and tested on a real coadd):

- the grid is the bluest arm's grid, then each redder arm's pixels that lie beyond the previous
  end by more than 1e-4 Å; every arm must fall on that grid within 1e-4 Å, or it raises;
- per pixel, flux is the inverse-variance weighted mean of the arms covering it, with each arm's
  ivar set to 0 where its mask is non-zero: ``flux = Σ ivar·flux / Σ ivar``, ``ivar = Σ ivar``;
- where every contribution is masked (summed ivar 0), the unmasked weighted mean and unmasked
  ivar are used instead (so such a pixel can have ivar > 0 but a non-zero mask: trust the mask);
- the mask is the bitwise OR of the arms' masks, reset to 0 wherever the masked ivar is > 0;
- where the ivar is still 0, flux is the (zero) weighted sum, never a division by zero.

One step is added before the join, which desispec does not take: each arm's pixels pass
:func:`desi.flag_invalid_pixels`, so that a NaN flux or an infinite or negative ivar gets ivar 0
and a pipeline mask bit. desispec would carry such a value into every sum it enters (0 * NaN is
NaN), losing the other arm's good value in the overlaps; here only valid arms contribute there.
On valid inputs the result is desispec's (tested against ``coadd_cameras`` on a real coadd).

desispec also skips fibres whose per-arm FIBERSTATUS is bad and can clip cosmics
(``cosmics_nsig``, 0 by default for camera coadds); a healpix coadd is already coadded over
exposures, and targets with COADD_FIBERSTATUS != 0 are removed by :func:`select_galaxy_spectra`
before any file is read, so neither applies here.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from .catalogue import table_columns
from .desi import FLUX_UNIT, N_PIXELS, flag_invalid_pixels, wavelength_grid
from .http import user_agent
from .shards import MISSING_COLUMNS, SpectraShard, write_spectra_files

log = logging.getLogger(__name__)

ARMS = ("b", "r", "z")
#: desispec's tolerance for "the same wavelength" when it joins arms (Å).
WAVELENGTH_TOLERANCE = 1e-4
EDR_ROOT = "https://data.desi.lbl.gov/public/edr/"
SPECPROD = "fuji"
#: The EDR redshift catalogue with the primary-spectrum flags (SV_PRIMARY, ZCAT_PRIMARY), relative
#: to the release root; it holds every zpix column (Z, ZWARN, SPECTYPE, COADD_FIBERSTATUS...)
#: plus SURVEY, PROGRAM, HEALPIX.
EDR_ZCATALOG = "vac/edr/zcat/fuji/v1.0/zall-pix-edr-vac.fits"
SOURCE_NAME = "desi-edr"


@dataclass
class CoaddSpectra:
    """Spectra of some targets on the combined grid: rows follow the TARGETIDs asked for."""

    targetid: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray


# -- where the files are ---------------------------------------------------------------------------


def healpix_coadd_path(survey: str, program: str, healpix: int, specprod: str = SPECPROD) -> str:
    """Path of a healpix coadd inside a release: ``spectro/redux/{specprod}/healpix/...``."""
    healpix = int(healpix)
    if healpix < 0:
        raise ValueError(f"healpix must be >= 0, got {healpix}")
    return (
        f"spectro/redux/{specprod}/healpix/{survey}/{program}/{healpix // 100}/{healpix}/"
        f"coadd-{survey}-{program}-{healpix}.fits"
    )


def release_location(root: str | Path, relative: str) -> str:
    """``relative`` under a release root that is either a local mirror directory or an http(s) URL."""
    root = str(root)
    if root.startswith(("http://", "https://")):
        return posixpath.join(root.rstrip("/") + "/", relative)
    return str(Path(root) / relative)


def healpix_coadd_location(root: str | Path, survey: str, program: str, healpix: int, specprod: str = SPECPROD) -> str:
    return release_location(root, healpix_coadd_path(survey, program, healpix, specprod))


# -- reading one coadd -----------------------------------------------------------------------------


def read_coadd(
    path_or_url: str | Path, targetids, *, desi_grid: bool = False, agent: str | None = None
) -> CoaddSpectra:
    """The camera-combined spectra of ``targetids`` (in that order) from one coadd file or URL.

    Reads any DESI spectra file with a FIBERMAP and, per camera, ``{CAM}_WAVELENGTH``,
    ``{CAM}_FLUX``, ``{CAM}_IVAR`` and optionally ``{CAM}_MASK`` (b, r, z as in the healpix
    coadds, or the single ``BRZ`` of a file already combined), joined as desispec joins them
    (:func:`combine_arms`). Flux comes back in 1e-17 erg/s/cm²/Å: a flux HDU's ``BUNIT`` is
    converted with astropy.units when it is another flux density unit, and a BUNIT that is not
    one raises. Only the rows asked for are read (astropy sections: for a local file through the
    OS page cache, for a URL through HTTP range requests). A TARGETID absent from the file raises
    a KeyError naming it and the file.

    ``desi_grid=True`` (what the pipeline asks) also checks that the joined grid is the
    7781-pixel DESI grid of :mod:`desi` (within 1e-4 Å; the grid returned is then exactly
    :func:`desi.wavelength_grid`) and raises a ValueError naming the file otherwise. ``agent`` is
    the User-Agent of HTTP reads (:func:`http.user_agent` when None).
    """
    targetids = np.asarray(targetids, dtype=np.int64).reshape(-1)
    source = str(path_or_url)
    with _open_coadd(source, agent) as hdul:
        rows = _rows_of(hdul, targetids, source)
        waves, fluxes, ivars, masks = {}, {}, {}, {}
        for arm in _cameras(hdul, source):
            name = arm.upper()
            waves[arm] = np.asarray(_hdu(hdul, f"{name}_WAVELENGTH", source).data, dtype=np.float64)
            flux_hdu = _hdu(hdul, f"{name}_FLUX", source)
            scale = _flux_scale(flux_hdu.header, f"{source}[{name}_FLUX]")
            fluxes[arm] = _read_rows(flux_hdu, rows, np.float64) * scale
            ivars[arm] = _read_rows(_hdu(hdul, f"{name}_IVAR", source), rows, np.float64) / scale**2
            if f"{name}_MASK" in hdul:
                masks[arm] = _read_rows(hdul[f"{name}_MASK"], rows, np.int64)
            else:
                masks[arm] = np.zeros(fluxes[arm].shape, np.int64)
    if not all(np.isfinite(wave).all() for wave in waves.values()):
        raise ValueError(f"{source}: a *_WAVELENGTH HDU holds non-finite wavelengths")
    wave, flux, ivar, mask = combine_arms(waves, fluxes, ivars, masks)
    if desi_grid:
        _check_grid(wave, source)
        wave = wavelength_grid()  # the same grid, to the bit, for every file and source
    return CoaddSpectra(targetids, wave, flux, ivar, mask)


def _cameras(hdul: fits.HDUList, source: str) -> list[str]:
    """The cameras of a spectra file: every ``{CAM}_WAVELENGTH`` HDU with its FLUX and IVAR."""
    cameras = [hdu.name.removesuffix("_WAVELENGTH").lower() for hdu in hdul if hdu.name.endswith("_WAVELENGTH")]
    if not cameras:
        raise KeyError(
            f"{source}: no *_WAVELENGTH HDU; a DESI coadd has FIBERMAP and {{B,R,Z}}_{{WAVELENGTH,FLUX,IVAR,MASK}}"
        )
    return cameras


def _flux_scale(header: fits.Header, where: str) -> float:
    """Factor from the HDU's flux unit (BUNIT; DESI's when absent) to FLUX_UNIT."""
    if "BUNIT" not in header:
        return 1.0
    try:
        return float(u.Unit(str(header["BUNIT"])).to(u.Unit(FLUX_UNIT)))
    except (ValueError, u.UnitConversionError) as err:
        bunit = header["BUNIT"]
        raise ValueError(f"{where}: BUNIT {bunit!r} is not a flux density like {FLUX_UNIT!r} ({err})") from None


def coadd_targetids(path_or_url: str | Path, agent: str | None = None) -> np.ndarray:
    """The TARGETIDs of a coadd's rows, in file order (reads the FIBERMAP only)."""
    source = str(path_or_url)
    with _open_coadd(source, agent) as hdul:
        fibermap = _hdu(hdul, "FIBERMAP", source)
        if "TARGETID" not in fibermap.columns.names:
            raise KeyError(f"{source}: FIBERMAP has no TARGETID column")
        return np.asarray(fibermap.data["TARGETID"], dtype=np.int64)


def _open_coadd(source: str, agent: str | None = None) -> fits.HDUList:
    # memmap=None, not True: astropy refuses a strict memory map of scaled data, and an EDR mask
    # (uint32, stored as int32 + BZERO) is scaled. A URL is read through fsspec's HTTP range
    # requests, which do not go through the polite Fetcher: for many files, mirror them first
    # with Fetcher.download_file and read the local copies.
    if source.startswith(("http://", "https://")):
        headers = {"User-Agent": agent or user_agent()}
        return fits.open(
            source, lazy_load_hdus=True, use_fsspec=True, fsspec_kwargs={"client_kwargs": {"headers": headers}}
        )
    return fits.open(source, memmap=None, lazy_load_hdus=True)


def _hdu(hdul: fits.HDUList, name: str, source: str):
    try:
        return hdul[name]
    except KeyError:
        raise KeyError(
            f"{source}: no HDU {name}; a DESI coadd has FIBERMAP and {{B,R,Z}}_{{WAVELENGTH,FLUX,IVAR,MASK}}"
        ) from None


def _rows_of(hdul: fits.HDUList, targetids: np.ndarray, source: str) -> np.ndarray:
    fibermap = _hdu(hdul, "FIBERMAP", source)
    if "TARGETID" not in fibermap.columns.names:
        raise KeyError(f"{source}: FIBERMAP has no TARGETID column")
    row_of: dict[int, int] = {}
    repeated: set[int] = set()
    for row, targetid in enumerate(np.asarray(fibermap.data["TARGETID"], dtype=np.int64).tolist()):
        if targetid in row_of:
            repeated.add(targetid)
        row_of.setdefault(targetid, row)
    absent = [t for t in targetids.tolist() if t not in row_of]
    if absent:
        shown = ", ".join(str(t) for t in absent[:10])
        raise KeyError(f"{source}: TARGETID(s) {shown} not in this coadd ({len(absent)} of {len(targetids)} absent)")
    ambiguous = sorted(repeated.intersection(targetids.tolist()))
    if ambiguous:
        raise ValueError(f"{source}: TARGETID(s) {ambiguous[:10]} appear in more than one row")
    return np.array([row_of[t] for t in targetids.tolist()], dtype=np.int64)


def _read_rows(hdu, rows: np.ndarray, dtype) -> np.ndarray:
    # Section reads each row from the file (applying BZERO, so a uint32 mask stored as int32 comes
    # back right) without loading the whole image; rows are read in file order, then reordered.
    by_file_order = np.argsort(rows, kind="stable")
    data = np.empty((len(rows), hdu.shape[-1]), dtype=dtype)
    for i in by_file_order:
        data[i] = hdu.section[int(rows[i])]
    return data


def _check_grid(wave: np.ndarray, source: str) -> None:
    grid = wavelength_grid()
    if len(wave) != N_PIXELS or np.max(np.abs(wave - grid)) > WAVELENGTH_TOLERANCE:
        raise ValueError(
            f"{source}: the joined arms give {len(wave)} pixels from {wave[0]:.2f} to {wave[-1]:.2f} Å; "
            f"expected the DESI grid of {N_PIXELS} pixels, {grid[0]:.1f}-{grid[-1]:.1f} Å"
        )


def combine_arms(
    waves: dict[str, np.ndarray],
    fluxes: dict[str, np.ndarray],
    ivars: dict[str, np.ndarray],
    masks: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join per-arm (n, n_pix_arm) spectra into (wave, flux, ivar, mask) as desispec's coadd_cameras.

    See the module docstring for the rules. Arms are taken in order of increasing mean
    wavelength; flux and ivar come back float32, mask uint32 (the survey's bits and those of
    :func:`desi.flag_invalid_pixels`).
    """
    arms = sorted(waves, key=lambda arm: float(np.mean(waves[arm])))
    wave = np.asarray(waves[arms[0]], dtype=np.float64)
    for arm in arms[1:]:
        wave = np.append(wave, waves[arm][waves[arm] > wave[-1] + WAVELENGTH_TOLERANCE])
    n = len(next(iter(fluxes.values())))
    flux_sum = np.zeros((n, len(wave)), np.float64)
    ivar_sum = np.zeros_like(flux_sum)
    flux_sum_unmasked = np.zeros_like(flux_sum)
    ivar_sum_unmasked = np.zeros_like(flux_sum)
    mask = np.zeros((n, len(wave)), np.int64)
    for arm in arms:
        where = _indices_on(wave, waves[arm], arm)
        shapes = {name: np.shape(arrays[arm]) for name, arrays in (("flux", fluxes), ("ivar", ivars))}
        if masks is not None:
            shapes["mask"] = np.shape(masks[arm])
        if set(shapes.values()) != {(n, len(where))}:
            raise ValueError(f"arm {arm}: shapes {shapes}, expected {(n, len(where))}")
        flux, ivar, arm_mask = flag_invalid_pixels(fluxes[arm], ivars[arm], None if masks is None else masks[arm])
        flux, ivar, arm_mask = flux.astype(np.float64), ivar.astype(np.float64), arm_mask.astype(np.int64)
        ivar_masked = ivar * (arm_mask == 0)
        ivar_sum[:, where] += ivar_masked
        flux_sum[:, where] += ivar_masked * flux
        ivar_sum_unmasked[:, where] += ivar
        flux_sum_unmasked[:, where] += ivar * flux
        mask[:, where] |= arm_mask
    all_masked = ivar_sum == 0
    flux_sum[all_masked] = flux_sum_unmasked[all_masked]
    ivar_sum[all_masked] = ivar_sum_unmasked[all_masked]
    mask[~all_masked] = 0
    flux = flux_sum / (ivar_sum + (ivar_sum == 0))
    return wave, flux.astype(np.float32), ivar_sum.astype(np.float32), (mask & 0xFFFFFFFF).astype(np.uint32)


def _indices_on(wave: np.ndarray, arm_wave: np.ndarray, arm: str) -> np.ndarray:
    start = int(np.argmin(np.abs(wave - arm_wave[0])))
    where = np.arange(start, start + len(arm_wave))
    if where[-1] >= len(wave) or np.max(np.abs(wave[where] - arm_wave)) > WAVELENGTH_TOLERANCE:
        raise ValueError(f"arm {arm}: its wavelengths do not fall on the joined grid within {WAVELENGTH_TOLERANCE} Å")
    return where


# -- the redshift catalogue and target selection ---------------------------------------------------

#: Columns of the EDR zcatalogue that target selection and the coadd look-up need.
ZCATALOG_COLUMNS = (
    "TARGETID",
    "SURVEY",
    "PROGRAM",
    "HEALPIX",
    "TARGET_RA",
    "TARGET_DEC",
    "Z",
    "ZERR",
    "ZWARN",
    "SPECTYPE",
    "COADD_FIBERSTATUS",
    "OBJTYPE",
    "SV_PRIMARY",
    "ZCAT_PRIMARY",
)


def read_redshift_catalogue(path: str | Path, columns=ZCATALOG_COLUMNS, hdu: str = "ZCATALOG") -> pd.DataFrame:
    """Some columns of a DESI redshift catalogue HDU (``ZCATALOG``; ``REDSHIFTS`` in redrock files).

    Read with astropy's ``Table.read`` (memory-mapped, so only the columns asked for are copied
    out of the multi-GB file), which honours FITS null values: a masked entry comes back missing
    (NaN for floats, ``pd.NA`` for integers and booleans), never as the sentinel stored under it
    (see :mod:`catalogue`); a masked TARGETID raises. Strings are stripped, FITS big-endian
    numbers come back native. Columns asked for but absent raise a KeyError that lists what the
    file has.
    """
    with fits.open(path, memmap=True) as hdul:
        if hdu not in hdul:
            raise KeyError(f"{path}: no HDU {hdu}; it has {[h.name for h in hdul]}")
    table = Table.read(path, hdu=hdu, memmap=True)
    return table_columns(table, list(columns), f"{path}[{hdu}]")


def select_galaxy_spectra(
    zcat: pd.DataFrame,
    primary_column: str = "SV_PRIMARY",
    surveys: list[str] | None = None,
    programs: list[str] | None = None,
) -> pd.DataFrame:
    """Rows of a redshift catalogue that are good galaxy spectra, one per TARGETID.

    Keeps COADD_FIBERSTATUS == 0 (no fibre problem), the primary spectrum of each target
    (``primary_column``: SV_PRIMARY as AstroCLIP's Data Lab query used, or ZCAT_PRIMARY),
    SPECTYPE == GALAXY, ZWARN == 0 (a confident redshift), a finite Z (when the column is there)
    and TARGETID > 0 (negative ids are unassigned fibres), optionally restricted to some
    surveys/programs. A missing value in any of these columns fails its test.
    """
    needed = ["TARGETID", "COADD_FIBERSTATUS", primary_column, "SPECTYPE", "ZWARN"]
    absent = [c for c in needed if c not in zcat.columns]
    if absent:
        raise KeyError(f"redshift catalogue lacks column(s) {absent}; selection needs {needed}")
    # A missing (masked) value never passes: fillna(False) on each test.
    keep = (
        (zcat.TARGETID > 0)
        & (zcat.COADD_FIBERSTATUS == 0).fillna(False)
        & zcat[primary_column].fillna(False).astype(bool)
        & (zcat.SPECTYPE.astype(str).str.strip() == "GALAXY")
        & (zcat.ZWARN == 0).fillna(False)
    )
    if "Z" in zcat.columns:
        keep &= np.isfinite(zcat.Z.to_numpy(np.float64, na_value=np.nan))
    if surveys is not None:
        keep &= zcat.SURVEY.isin(surveys)
    if programs is not None:
        keep &= zcat.PROGRAM.isin(programs)
    selected = zcat[keep]
    repeated = selected.TARGETID[selected.TARGETID.duplicated()]
    if len(repeated):
        raise ValueError(f"{primary_column} marks more than one spectrum of TARGETID(s) {repeated.tolist()[:10]}")
    return selected.reset_index(drop=True)


def coadd_groups(targets: pd.DataFrame) -> dict[tuple[str, str, int], np.ndarray]:
    """TARGETIDs per coadd file, keyed by (survey, program, healpix), in the targets' order."""
    absent = [c for c in ("TARGETID", "SURVEY", "PROGRAM", "HEALPIX") if c not in targets.columns]
    if absent:
        raise KeyError(f"targets lack column(s) {absent}; locating coadds needs SURVEY, PROGRAM, HEALPIX")
    groups = targets.groupby(["SURVEY", "PROGRAM", "HEALPIX"], sort=True).TARGETID
    return {(str(s), str(p), int(h)): ids.to_numpy(np.int64) for (s, p, h), ids in groups}


def write_coadd_spectra_shard(
    targets: pd.DataFrame,
    root: str | Path,
    spectra_path: str | Path,
    missing_path: str | Path,
    specprod: str = SPECPROD,
    agent: str | None = None,
) -> None:
    """Read one shard's targets from the healpix coadds under ``root`` and write its raw-shard files.

    ``targets`` are the shard's rows (TARGETID, SURVEY, PROGRAM, HEALPIX); the shard keeps their
    order. A target is listed as missing, and the shard goes on, when its coadd file does not
    exist (``coadd_not_found``), does not hold it (``not_in_coadd``), holds it in more than one
    row (``several_rows_in_coadd``), or has no valid pixel for it (``no_valid_pixel``). A file
    that exists but is not a coadd raises: that is a broken mirror or server, not a target.
    ``agent`` is the User-Agent of HTTP reads.
    """
    spectra: dict[int, tuple] = {}
    missing: list[tuple[int, str]] = []
    for (survey, program, healpix), ids in coadd_groups(targets).items():
        location = healpix_coadd_location(root, survey, program, healpix, specprod)
        try:
            in_file = pd.Series(coadd_targetids(location, agent)).value_counts()
        except FileNotFoundError:
            log.warning("%s: no such coadd; its %d target(s) are listed as missing", location, len(ids))
            missing += [(int(t), f"coadd_not_found: {location}") for t in ids]
            continue
        rows_per_target = in_file.reindex(ids, fill_value=0).to_numpy()
        missing += [(int(t), f"not_in_coadd: {location}") for t in ids[rows_per_target == 0]]
        missing += [
            (int(t), f"several_rows_in_coadd: {n} rows in {location}")
            for t, n in zip(ids[rows_per_target > 1], rows_per_target[rows_per_target > 1], strict=True)
        ]
        readable = ids[rows_per_target == 1]
        if len(readable):
            coadd = read_coadd(location, readable, desi_grid=True, agent=agent)
            for k, targetid in enumerate(coadd.targetid):
                spectra[int(targetid)] = (coadd.flux[k], coadd.ivar[k], coadd.mask[k])
    kept = [int(t) for t in targets.TARGETID if int(t) in spectra]
    stacked = [np.stack([spectra[t][j] for t in kept]) if kept else np.zeros((0, N_PIXELS)) for j in range(3)]
    shard = SpectraShard(np.asarray(kept, np.int64), wavelength_grid(), *stacked)
    order = {int(t): i for i, t in enumerate(targets.TARGETID)}
    missing.sort(key=lambda item: order[item[0]])
    write_spectra_files(spectra_path, missing_path, shard, pd.DataFrame(missing, columns=MISSING_COLUMNS), SOURCE_NAME)
