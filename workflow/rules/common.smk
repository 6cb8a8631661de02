# Config validation and every helper the rules use; the other .smk files hold rules only.
import ast
import functools
import glob
import hashlib
import os
import posixpath

import h5py
import pandas as pd
from snakemake.exceptions import WorkflowError
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
# The image backbone: a ResNet pretrained by MoCo v2 (pretrain_images, AstroCLIP v1) or a ViT
# pretrained by DINOv2 (pretrain_dino, v2), or either imported from published weights
# (import_image_encoder); each writes results/models/image_encoder.ckpt.
# model: published evaluates the published AstroCLIP v2 weights (published.smk), a ViT's.
PUBLISHED = config["model"] == "published"
IMAGE_ARCHITECTURE = "vit" if PUBLISHED else config["image_encoder"]["architecture"]
# evaluation.compare_image_encoders: the other backbones, pretrained and aligned the same way under
# results/comparison/{backbone}/, for one table (compare.smk).
COMPARE_ENCODERS = config["evaluation"]["compare_image_encoders"]


def image_encoder_params(architecture=IMAGE_ARCHITECTURE):
    """Params: the image_encoder block without the keys of the other architecture, so that
    editing the ViT's sizes does not rerun the ResNet's pretraining and the reverse."""
    other = "vit" if architecture == "resnet" else "width"
    block = {**config["image_encoder"], "architecture": architecture}
    return {key: value for key, value in block.items() if key != other}


def own_backbone():
    """This run's image backbone by its comparison name; None when imported from weights."""
    if PUBLISHED or config["image_encoder"]["weights"] is not None:
        return None
    return "dino" if IMAGE_ARCHITECTURE == "vit" else "moco"


def pretrained_here(backbone):
    """Whether ``backbone`` ('dino' or 'moco') is pretrained here, as this run's own or for the comparison."""
    return own_backbone() == backbone or COMPARE_ENCODERS


def require_moco_head_width():
    """Stop at parse time when a ResNet pretrained here by MoCo would be aligned with another width.

    A ResNet's image embedding is its MoCo projection head's output (AstroCLIP v1), so the head must
    be as wide as the embedding: otherwise the alignment would stop only after the pretraining.
    """
    projection, embedding = (
        config["pretrain_images"]["projection_dim"],
        config["align"]["embed_dim"],
    )
    if pretrained_here("moco") and projection != embedding:
        role = (
            "this run's image encoder"
            if own_backbone() == "moco"
            else "the comparison's ResNet/MoCo backbone"
        )
        raise WorkflowError(
            f"config keys 'pretrain_images.projection_dim' ({projection}) and 'align.embed_dim' ({embedding}) "
            f"differ, but {role} is a ResNet whose MoCo projection head gives the image embedding: set "
            f"pretrain_images.projection_dim to {embedding}."
        )


require_moco_head_width()


def comparison_file(backbone, name):
    """results/models/<name> for this run's own backbone, else results/comparison/<backbone>/<name>."""
    if backbone == own_backbone():
        return f"results/models/{name}"
    return f"results/comparison/{backbone}/{name}"


COMPARED = ["dino", "moco", "random"]
COMPARED_LABELS = {
    "dino": "ViT/DINO",
    "moco": "ResNet/MoCo",
    "random": "ViT, random weights",
}


def compared_embeddings(backbone):
    """The embedding files of the held-out splits made with ``backbone``'s aligned model."""
    if backbone == own_backbone():
        return ["results/embeddings/val.h5", "results/embeddings/test.h5"]
    return [
        f"results/comparison/{backbone}/embeddings/{split}.h5"
        for split in ("val", "test")
    ]


def pretraining_metrics_file(backbone):
    if backbone == own_backbone():
        return "results/tables/image_pretraining_metrics.csv"
    return f"results/comparison/{backbone}/pretraining_metrics.csv"


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


def require_target_selection_output():
    """Refuse to run when the target-selection checkpoint's output is gone but files made from it remain.

    Snakemake (>= 9.21.1, deliberately: snakemake PR 4124 for issue 3879) treats a deleted
    checkpoint output like a deleted intermediate file when what was made from it still exists: the
    checkpoint does not rerun, the input functions that read its output are never evaluated, and so
    their rules' rerun triggers are never checked: a changed `dataset.split` then gives "Nothing to
    be done", with the old split in the results. Called by an input function (`target_catalogue`):
    the command line's --forcerun and targets are known only once the DAG is being built. Acts only
    in the main Snakemake process, and not when the checkpoint is forced or its output asked for.
    """
    settings = workflow.dag_settings
    selection = TARGET_SELECTION[SOURCE]
    if not workflow.is_main_process or settings is None or settings.forceall:
        return
    if selection in settings.forcerun:
        return
    outputs = [str(path) for path in workflow.get_rule(selection).output]
    missing = [path for path in outputs if not os.path.exists(path)]
    if not missing or set(missing) & set(settings.targets):
        return
    derived = sorted(glob.glob(f"{RAW}/*/shard-*.h5")) + [
        path
        for path in dataset_files()
        if made_from_selection(path, f"{RAW}/targets.parquet")
    ]
    if derived:
        raise WorkflowError(
            f"{', '.join(missing)} (the output of checkpoint {selection}) is missing, but files made "
            f"from it exist ({', '.join(derived[:3])}{', ...' if len(derived) > 3 else ''}). "
            "Snakemake would then not notice changes behind it (a changed dataset.split, say) and "
            "keep the old results. Restore the file, or remake it and everything after it with "
            f"`snakemake --cores all --forcerun {selection}` (with source desi-edr this downloads the "
            "shards again)."
        )


def made_from_selection(dataset_path, targets_path):
    """Whether a dataset file exists and was made from ``targets_path`` (its ``targets`` attribute;
    a file without one is counted, since it cannot say): after a switch of `source`, the other
    source's dataset files are out of date, not made from this source's missing selection.
    """
    if not os.path.exists(dataset_path):
        return False
    with h5py.File(dataset_path, "r") as h5:
        return h5.attrs.get("targets", targets_path) == targets_path


def target_catalogue(wildcards):
    """Input function: the chosen source's targets.parquet, once `require_target_selection_output` passes."""
    require_target_selection_output()
    return f"{RAW}/targets.parquet"


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


# Library code as a rerun trigger. Snakemake's "code" trigger hashes a rule's script, but the
# scripts are one-line adapters: what a rule computes lives in src/astroclip_pipeline, which
# Snakemake cannot see. So every script-running rule passes the param
# code=library_code("<its script>.py"), a digest of the library modules that script imports,
# directly or through other library modules: editing a module (or pulling a change to it) reruns
# exactly the rules that run it, and their descendants through their changed outputs.
LIBRARY = "astroclip_pipeline"
LIBRARY_ROOT = os.path.join(workflow.basedir, "src")
SCRIPTS = os.path.join(workflow.basedir, "workflow", "scripts")


def _module_file(name):
    """The source file of library module `name` (dotted), or None if it is not a module."""
    base = os.path.join(LIBRARY_ROOT, *name.split("."))
    for path in (os.path.join(base, "__init__.py"), f"{base}.py"):
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _imported_modules(path, module_name):
    """Library modules that the Python file `path` (dotted name `module_name`, None for a script) imports
    anywhere in it (function-level imports too), with their parent packages, whose __init__ runs
    first."""
    package = (
        module_name
        if path.endswith("__init__.py")
        else (module_name or "").rpartition(".")[0]
    )
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = (
                    package.rsplit(".", node.level - 1)[0]
                    if node.level > 1
                    else package
                )
                base = f"{parent}.{base}".rstrip(".")
            # `from package import name`: name is a submodule or an attribute of the package
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != LIBRARY:
            continue
        for i in range(1, len(parts) + 1):
            if _module_file(".".join(parts[:i])):
                found.add(".".join(parts[:i]))
    return found


@functools.cache
def _library_closure(path, module_name=None):
    """Every library module that running the file `path` may import (transitively)."""
    seen, todo = set(), [(path, module_name)]
    while todo:
        for name in _imported_modules(*todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append((_module_file(name), name))
    return frozenset(seen)


def library_code(script):
    """Params: a digest (16 hex digits of SHA-256) of the library source that the rule's script
    `workflow/scripts/<script>` runs: every module it imports from src/astroclip_pipeline,
    directly or transitively. It changes when one of those files changes, and only then.
    """
    digest = hashlib.sha256()
    for name in sorted(_library_closure(os.path.join(SCRIPTS, script))):
        digest.update(name.encode() + b"\0")
        with open(_module_file(name), "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:16]


def published_file(name):
    """Input function: the published file `name` (astroclip, specformer, astrodino), read in place
    from published.<name>.path when given, else downloaded under resources/published/.
    """
    entry = config["published"][name]
    return entry["path"] or f"resources/published/{name}/{entry['file']}"


def run_dir_of(output_name):
    """Params function: a training run's working directory (checkpoints, metrics), named after its
    output file without the extension, e.g. results/models/spectrum_encoder/."""
    return lambda wildcards, output: os.path.splitext(output[output_name])[0]


def dataset_files():
    return [f"results/data/{split}.h5" for split in SPLITS]


# The Galaxy Zoo DECaLS volunteer catalogue, named as on Zenodo; the mock survey simulates it.
GALAXY_ZOO_CATALOGUE = "gz_decals_volunteers_5.csv"


def galaxy_zoo_download():
    return f"{DOWNLOADS}/galaxy_zoo/{GALAXY_ZOO_CATALOGUE}"


def galaxy_zoo_catalogue():
    """Input: the GZD-5 volunteer catalogue: the mock's simulated one, or morphology.catalogue,
    downloaded when it is a URL and read in place when it is a path."""
    if SOURCE == "mock":
        return f"{MOCK_RAW}/{GALAXY_ZOO_CATALOGUE}"
    location = config["morphology"]["catalogue"]
    return galaxy_zoo_download() if is_url(location) else location


def morphology_protocol():
    """Params: the morphology block's protocol keys (the gallery size reruns no classifier)."""
    return {
        k: v
        for k, v in config["morphology"].items()
        if k not in ("gallery_per_answer", "catalogue")
    }


def has_galaxy_zoo():
    return SOURCE == "mock" or config["morphology"]["catalogue"] is not None


def morphology_metrics_table():
    """Input of the headline table: the morphology metrics, where there are Galaxy Zoo labels."""
    return ["results/tables/morphology_metrics.csv"] if has_galaxy_zoo() else []


def v2_reference_files(wildcards):
    """Input function: the training split's embeddings and backbone features, the v2 protocol's
    references (evaluate/property_prediction.py), when the v2 protocol is chosen."""
    if "v2" not in config["evaluation"]["protocols"]:
        return {}
    return {
        "training_embeddings": "results/embeddings/train.h5",
        "training_backbone": "results/features/backbones_train.h5",
    }


def supervised_baseline_predictions():
    """Input of the R² table: the supervised baselines' predictions, where baselines.enabled."""
    if not config["baselines"]["enabled"]:
        return []
    return [
        f"results/baselines/{name}_predictions.parquet"
        for name in ("resnet18", "conv_att")
    ]


def supervised_baseline_settings():
    """Params: the baselines block less `enabled` (which decides whether they run, not how)."""
    return {k: v for k, v in config["baselines"].items() if k != "enabled"}


def morphology_outputs():
    """The morphology tables and figures where there is a Galaxy Zoo catalogue, and the mock
    survey's morphology gallery (only it knows the truth)."""
    outputs = []
    if has_galaxy_zoo():
        outputs += [
            "results/tables/morphology_metrics.csv",
            "results/figures/morphology/scores.png",
            "results/figures/morphology/confusion.png",
            "results/figures/morphology/surest_galaxies.png",
        ]
    if SOURCE == "mock":
        outputs.append("results/figures/overview/morphology_gallery.png")
    return outputs


def all_outputs():
    return (
        dataset_files()
        + [
            "results/tables/dataset_cuts.csv",
            "results/figures/overview/cutout_gallery.png",
            "results/figures/overview/example_spectra.png",
            "results/figures/overview/distributions.png",
            "results/figures/pretrain/mask_filling.png",
            "results/tables/mask_filling_mse.csv",
            "results/tables/image_backbone_knn.csv",
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
        + morphology_outputs()
        + ["results/tables/v2_headline.csv"]
        # the mock survey knows which cutouts carry artefacts; real data do not
        + (["results/tables/dbscan_artefacts.csv"] if SOURCE == "mock" else [])
        # training curves: none when the published weights are evaluated
        + (
            [
                "results/figures/pretrain/spectrum_loss.png",
                "results/figures/align/alignment_loss.png",
            ]
            if not PUBLISHED
            else []
        )
        + (
            ["results/figures/pretrain/image_loss.png"]
            if config["image_encoder"]["weights"] is None and not PUBLISHED
            else []
        )
        + (
            ["results/figures/pretrain/vit_attention.png"]
            if IMAGE_ARCHITECTURE == "vit"
            else []
        )
        + (["results/tables/image_encoder_comparison.csv"] if COMPARE_ENCODERS else [])
    )
