import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from astroclip_pipeline.data.dataset_files import build_dataset
from astroclip_pipeline.data.split import SPLITS
from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_cutouts, write_spectra, write_targets

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


@pytest.fixture(scope="session")
def tiny_spec() -> MockSurveySpec:
    return MockSurveySpec(seed=3, n_galaxies=120, galaxies_per_shard=60, rebin=8, image_size=32)


def write_mock_survey(spec: MockSurveySpec, root: Path) -> dict:
    """Every raw file of a mock survey under ``root``, as the workflow lays them out."""
    paths = {"targets": root / "targets.parquet", "galaxies": root / "galaxies.parquet"}
    n_shards = write_targets(spec, paths["targets"], paths["galaxies"])
    paths.update(spectra=[], cutouts=[], missing=[])
    for i in range(n_shards):
        spectra, cutouts = root / f"spectra/shard-{i}.h5", root / f"cutouts/shard-{i}.h5"
        write_spectra(spec, paths["galaxies"], i, spectra, root / f"spectra/missing-{i}.csv")
        write_cutouts(spec, paths["galaxies"], i, cutouts, root / f"cutouts/missing-{i}.csv")
        paths["spectra"].append(spectra)
        paths["cutouts"].append(cutouts)
        paths["missing"] += [root / f"spectra/missing-{i}.csv", root / f"cutouts/missing-{i}.csv"]
    return paths


@pytest.fixture(scope="session")
def tiny_survey(tiny_spec, tmp_path_factory) -> dict:
    return write_mock_survey(tiny_spec, tmp_path_factory.mktemp("survey"))


@pytest.fixture(scope="session")
def tiny_dataset(tiny_survey, tmp_path_factory) -> dict:
    """The tiny survey's train/val/test dataset files."""
    out = tmp_path_factory.mktemp("dataset")
    paths = {s: out / f"{s}.h5" for s in SPLITS}
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    build_dataset(
        tiny_survey["targets"], tiny_survey["spectra"], tiny_survey["cutouts"], tiny_survey["missing"],
        paths, out / "counts.csv", fractions,
    )  # fmt: skip
    return paths


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow's source (no results, no environment) to run Snakemake in."""
    ignore = shutil.ignore_patterns(".git", ".venv", "results", "resources", ".snakemake", "__pycache__", "tests")
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(SNAKEMAKE), "--cores", "2", *args], cwd=workdir, capture_output=True, text=True, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result
