"""The mock survey as a source: target selection, then spectra and cutouts shard by shard.

The files written here are exactly those of the real downloads (``sources/shards.py``), plus one
file only the simulator reads, ``galaxies.parquet``: the hidden parameters (template mixes, sizes,
shapes) from which each shard is rendered. Every random draw comes from a generator seeded by
(seed, stage, shard), so a shard can be remade alone and comes out byte-identical.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...files import atomic_path
from ..desi import wavelength_grid
from ..shards import (
    MISSING_COLUMNS,
    CutoutShard,
    SpectraShard,
    write_cutout_shard,
    write_missing,
    write_spectra_files,
)
from .images import ARTEFACT_KINDS, PIXEL_SCALE, render_cutouts
from .morphology import BAR_KINDS, MERGER_KINDS, morphology_label
from .population import PopulationSpec, draw_population
from .spectra import model_spectra, observe_spectra
from .templates import BANDS, nanomaggies_to_mag

SOURCE_NAME = "mock"
#: Each stage draws from its own random stream (``stage_rng``), so that one can change alone.
STAGE_POPULATION, STAGE_SPECTRA, STAGE_IMAGES, STAGE_GALAXY_ZOO = 0, 1, 2, 3
#: The catalogue columns the mock publishes, as PROVABGS spells them (SSFR is log10 per year,
#: AGE is the mass-weighted age in Gyr, Z_MW the mass-weighted metallicity as a mass fraction).
CATALOGUE_COLUMNS = ["TARGETID", "RA", "DEC", "Z_HP", "LOGMSTAR", "SSFR", "AGE", "Z_MW", "MAG_G", "MAG_R", "MAG_Z"]


@dataclass(frozen=True)
class MockSurveySpec:
    """Everything that defines a mock survey; one-to-one with the ``mock:`` block of the config."""

    seed: int
    n_galaxies: int
    galaxies_per_shard: int
    rebin: int
    image_size: int
    z_min: float = 0.01
    z_max: float = 0.6
    mag_limit_r: float = 19.5
    psf_fwhm: float = 1.3
    neighbour_rate: float = 1.0
    artefact_fraction: float = 0.05
    catalogue_fault_fraction: float = 0.01

    @classmethod
    def from_config(cls, mock: dict) -> "MockSurveySpec":
        return cls(**mock)


def stage_rng(seed: int, stage: int, shard: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stage, shard])


def select_targets(spec: MockSurveySpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the survey's galaxies; return (targets catalogue, simulator parameters).

    The catalogue is what a PROVABGS cross-match would give: properties, magnitudes, the truth
    columns (prefixed TRUTH_, never read by training) and the shard index. A small fraction of
    rows carry the failure values real catalogues have (LOGMSTAR = -999 for a failed SED fit,
    a magnitude of 0 for missing photometry), so that the dataset cuts have something to cut.
    """
    rng = stage_rng(spec.seed, STAGE_POPULATION)
    population = PopulationSpec(spec.n_galaxies, spec.z_min, spec.z_max, spec.mag_limit_r)
    galaxies = draw_population(population, rng)
    n = len(galaxies)
    galaxies["ARTEFACT"] = np.where(
        rng.uniform(size=n) < spec.artefact_fraction, rng.integers(1, len(ARTEFACT_KINDS), n), 0
    )
    galaxies["SHARD"] = np.arange(n) // spec.galaxies_per_shard

    targets = pd.DataFrame({"TARGETID": galaxies.TARGETID, "RA": galaxies.RA, "DEC": galaxies.DEC})
    targets["Z_HP"] = galaxies.Z
    for column in ("LOGMSTAR", "SSFR", "AGE", "Z_MW"):
        targets[column] = galaxies[column]
    for band in BANDS:
        targets[f"MAG_{band.upper()}"] = nanomaggies_to_mag(galaxies[f"FLUX_{band.upper()}"])
    faulty = np.flatnonzero(rng.uniform(size=n) < spec.catalogue_fault_fraction)
    failed_fit = rng.uniform(size=faulty.size) < 0.5
    targets.loc[faulty[failed_fit], "LOGMSTAR"] = -999.0
    for row in faulty[~failed_fit]:
        targets.loc[row, f"MAG_{rng.choice(BANDS).upper()}"] = 0.0
    targets["TRUTH_ARTEFACT"] = galaxies.ARTEFACT > 0
    targets["TRUTH_ARTEFACT_KIND"] = np.asarray(ARTEFACT_KINDS)[galaxies.ARTEFACT]
    targets["TRUTH_BULGE_FRAC"] = galaxies.BULGE_FRAC
    targets["TRUTH_QUIESCENT"] = galaxies.QUIESCENT
    targets["TRUTH_MORPHOLOGY"] = morphology_label(galaxies)
    targets["TRUTH_FEATURED"] = galaxies.FEATURED
    targets["TRUTH_EDGE_ON"] = galaxies.EDGE_ON
    targets["TRUTH_ARMS"] = galaxies.ARMS
    targets["TRUTH_BAR"] = np.asarray(BAR_KINDS)[galaxies.BAR]
    targets["TRUTH_MERGER"] = np.asarray(MERGER_KINDS)[galaxies.MERGER]
    targets["TRUTH_RE_DISK"] = galaxies.RE_DISK
    targets["SHARD"] = galaxies.SHARD
    return targets, galaxies


def write_targets(spec: MockSurveySpec, targets_path: str | Path, galaxies_path: str | Path) -> int:
    """Select targets and write ``targets.parquet`` and ``galaxies.parquet``; return the shard count."""
    targets, galaxies = select_targets(spec)
    for frame, path in ((targets, targets_path), (galaxies, galaxies_path)):
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    return int(targets.SHARD.max()) + 1


def _shard_rows(galaxies_path: str | Path, shard: int) -> pd.DataFrame:
    galaxies = pd.read_parquet(galaxies_path)
    rows = galaxies[galaxies.SHARD == shard].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{galaxies_path}: no galaxies in shard {shard} (shards 0-{galaxies.SHARD.max()})")
    return rows


def _no_missing() -> pd.DataFrame:
    # The mock delivers every target; the file still exists so all sources look alike downstream.
    return pd.DataFrame(columns=MISSING_COLUMNS)


def write_spectra(spec: MockSurveySpec, galaxies_path, shard: int, spectra_path, missing_path) -> None:
    """Observe one shard's galaxies with the mock DESI spectrograph."""
    rows = _shard_rows(galaxies_path, shard)
    wavelength = wavelength_grid(spec.rebin)
    model = model_spectra(rows, wavelength, spec.psf_fwhm)
    flux, ivar, mask = observe_spectra(model, spec.rebin, stage_rng(spec.seed, STAGE_SPECTRA, shard))
    shard_data = SpectraShard(rows.TARGETID.to_numpy(), wavelength, flux, ivar, mask)
    write_spectra_files(spectra_path, missing_path, shard_data, _no_missing(), SOURCE_NAME)


def write_cutouts(spec: MockSurveySpec, galaxies_path, shard: int, cutouts_path, missing_path) -> None:
    """Image one shard's galaxies with the mock Legacy Survey."""
    rows = _shard_rows(galaxies_path, shard)
    images = render_cutouts(
        rows,
        spec.image_size,
        stage_rng(spec.seed, STAGE_IMAGES, shard),
        psf_fwhm=spec.psf_fwhm,
        neighbour_rate=spec.neighbour_rate,
    )
    shard_data = CutoutShard(rows.TARGETID.to_numpy(), images, "".join(BANDS), PIXEL_SCALE)
    write_cutout_shard(cutouts_path, shard_data, SOURCE_NAME)
    write_missing(missing_path, _no_missing())
