# Config validation and every helper the rules use; the other .smk files hold rules only.
import os

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
RAW = f"resources/{SOURCE}"

if SOURCE != "mock":
    raise ValueError(
        f"config key 'source': {SOURCE!r} has no download rules in this version of the workflow; "
        "use source: mock (the embedded mock survey)"
    )


wildcard_constraints:
    shard=r"\d+",
    split="|".join(SPLITS),


def n_shards():
    """Number of raw shards, known once the target-selection checkpoint has run."""
    targets = checkpoints.select_mock_targets.get().output.targets
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
        ]
        + (
            ["results/figures/pretrain/image_loss.png"]
            if config["image_encoder"]["weights"] is None
            else []
        )
    )
