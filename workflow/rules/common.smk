# Config validation and every helper the rules use; the other .smk files hold rules only.
import os
import posixpath

import pandas as pd
from snakemake.utils import validate

validate(
    config, workflow.source_path("../schemas/config.schema.yaml"), set_default=True
)

SPLITS = ["train", "val", "test"]
if abs(sum(config["dataset"]["split"].values()) - 1.0) > 1e-6:
    raise ValueError(
        f"config key 'dataset.split': fractions {config['dataset']['split']} add up to "
        f"{sum(config['dataset']['split'].values())}, expected 1"
    )
SOURCE = config["source"]
# Threads for the PyTorch jobs (training, embedding). Without a `threads:` directive Snakemake
# gives a job one thread and sets OMP_NUM_THREADS=1, which leaves torch on a single core; locally
# the request is capped at --cores, and on SLURM cpus_per_task in the profile decides.
TORCH_THREADS = 8
# Each source writes under its own directory, so that the rules of every source can be defined
# side by side without two of them making the same file; RAW is the chosen source's.
RAW = f"resources/{SOURCE}"
MOCK_RAW = "resources/mock"
DESI_RAW = "resources/desi-edr"
ASTROCLIP_RAW = "resources/astroclip-hdf5"
DOWNLOADS = "resources/downloads"
# The checkpoint whose targets.parquet fixes each source's number of shards.
TARGET_SELECTION = {
    "mock": "select_mock_targets",
    "desi-edr": "select_desi_targets",
    "astroclip-hdf5": "select_astroclip_hdf5_targets",
}

# Download jobs run on the submitting host by default (compute nodes of many clusters have no
# internet), and each holds one unit of its service's resource: otherwise `--cores all` would run
# a job per shard at once and multiply the per-job request rate by their number.
# `--resources legacysurvey=4` (etc.) on the command line overrides the default.
DOWNLOADS_LOCAL = config["downloads"]["localrules"]
for _service in ("legacysurvey", "sparcl", "desi_archive", "astroclip_hdf5"):
    if _service not in workflow.global_resources:
        workflow.register_resource(_service, config["downloads"]["jobs_per_service"])


wildcard_constraints:
    shard=r"\d+",
    split="|".join(SPLITS),


def n_shards():
    """Number of raw shards, known once the source's target-selection checkpoint has run."""
    targets = getattr(checkpoints, TARGET_SELECTION[SOURCE]).get().output.targets
    return int(pd.read_parquet(targets, columns=["SHARD"]).SHARD.max()) + 1


def raw_shards(kind):
    """Input function: every raw shard file of one kind ('spectra' or 'cutouts')."""
    return lambda wildcards: [f"{RAW}/{kind}/shard-{i}.h5" for i in range(n_shards())]


def missing_lists(wildcards):
    """Input function: the lists of undelivered targets of every shard, both kinds."""
    return [
        f"{RAW}/{kind}/missing-{i}.csv"
        for kind in ("spectra", "cutouts")
        for i in range(n_shards())
    ]


def is_url(location):
    return str(location).startswith(("http://", "https://"))


def desi_release_url(key):
    """Params: the URL of a release file (key 'zcatalog' or 'provabgs' of the desi block)."""
    return posixpath.join(config["desi"]["root"], config["desi"][key])


def desi_download(key):
    """Where the download rule puts a release file (named as in the archive)."""
    return f"{DOWNLOADS}/desi/{config['desi'][key]}"


def desi_release_file(key):
    """Input: a release file, read in place from a local mirror, or downloaded when root is a URL."""
    if is_url(config["desi"]["root"]):
        return desi_download(key)
    return os.path.join(config["desi"]["root"], config["desi"][key])


def desi_selection():
    """Params: the keys of the desi block that decide which spectra become targets."""
    keys = ("primary_column", "surveys", "programs", "targets_per_shard", "max_targets")
    return {key: config["desi"][key] for key in keys}


def desi_spectra_params():
    """Params: the spectra backend and only its own settings, so that editing the other
    backend's keys reruns nothing."""
    desi = config["desi"]
    if desi["spectra_backend"] == "sparcl":
        return dict(
            backend="sparcl",
            sparcl_url=desi["sparcl_url"],
            sparcl_batch=desi["sparcl_batch"],
        )
    return dict(backend="coadd", root=desi["root"], specprod=desi["specprod"])


# The coadd backend on a local mirror reads files, not a service: it may run anywhere, unthrottled.
DESI_SPECTRA_FROM_NETWORK = config["desi"]["spectra_backend"] == "sparcl" or is_url(
    config["desi"]["root"]
)


def astroclip_hdf5_download():
    return f"{DOWNLOADS}/astroclip/{os.path.basename(config['astroclip_hdf5']['url'])}"


def astroclip_hdf5_file():
    """Input: the AstroCLIP HDF5, downloaded when astroclip_hdf5.url is a URL, else read in place."""
    url = config["astroclip_hdf5"]["url"]
    return astroclip_hdf5_download() if is_url(url) else url


def run_dir_of(output_name):
    """Params function: a training run's working directory (checkpoints, metrics), named after its
    output file without the extension, e.g. results/models/spectrum_encoder/."""
    return lambda wildcards, output: os.path.splitext(output[output_name])[0]


def dataset_files():
    return [f"results/data/{split}.h5" for split in SPLITS]


def all_outputs():
    return (
        dataset_files()
        + [
            "results/tables/dataset_cuts.csv",
            "results/figures/overview/cutout_gallery.png",
            "results/figures/overview/example_spectra.png",
            "results/figures/overview/distributions.png",
            "results/figures/pretrain/spectrum_loss.png",
            "results/figures/pretrain/mask_filling.png",
            "results/tables/mask_filling_mse.csv",
            "results/tables/image_backbone_knn.csv",
            "results/figures/align/alignment_loss.png",
            "results/embeddings/val.h5",
            "results/embeddings/test.h5",
            "results/tables/retrieval.csv",
            "results/tables/property_r2.csv",
            "results/tables/photoz_metrics.csv",
        ]
        + [
            f"results/figures/evaluation/predicted_vs_true_{mode}.png"
            for mode in ("image", "spectrum", "cross")
        ]
        + [
            "results/figures/retrieval/retrieval_examples.png",
            "results/figures/retrieval/spectral_retrieval.png",
            "results/figures/structure/umap.png",
            "results/figures/structure/dbscan_umap.png",
            "results/figures/structure/dbscan_cutouts.png",
            "results/figures/structure/kmeans_silhouette.png",
            "results/figures/structure/kmeans_umap.png",
            "results/figures/structure/kmeans_spectra.png",
            "results/figures/structure/kmeans_cutouts.png",
            "results/explorer.html",
        ]
        # the mock survey knows which cutouts carry artefacts; real data do not
        + (["results/tables/dbscan_artefacts.csv"] if SOURCE == "mock" else [])
        + (
            ["results/figures/pretrain/image_loss.png"]
            if config["image_encoder"]["weights"] is None
            else []
        )
    )
