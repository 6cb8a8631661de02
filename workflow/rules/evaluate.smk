# Stage 6: what the embeddings know: zero-shot and few-shot property prediction (paper Table 1).

HELD_OUT = ["results/embeddings/val.h5", "results/embeddings/test.h5"]


# The frozen backbones' features of the held-out galaxies and, for the v2 protocol's references,
# of the training split.
BACKBONE_FEATURE_SPLITS = {
    "heldout": ["results/data/val.h5", "results/data/test.h5"],
    "train": ["results/data/train.h5"],
}


rule backbone_features:
    input:
        image_encoder="results/models/image_encoder.ckpt",
        spectrum_encoder="results/models/spectrum_encoder.ckpt",
        datasets=lambda wildcards: BACKBONE_FEATURE_SPLITS[wildcards.part],
    output:
        "results/features/backbones_{part}.h5",
    log:
        "results/logs/backbone_features_{part}.log",
    wildcard_constraints:
        part="|".join(BACKBONE_FEATURE_SPLITS),
    conda:
        "../../envs/astroclip.yaml"
    threads: TORCH_THREADS
    params:
        code=library_code("backbone_features.py"),
    script:
        "../scripts/backbone_features.py"


rule property_predictions:
    input:
        unpack(v2_reference_files),
        embeddings=HELD_OUT,
        backbone="results/features/backbones_heldout.h5",
    output:
        "results/tables/property_predictions.parquet",
    log:
        "results/logs/property_predictions.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("property_predictions.py"),
        k=config["evaluation"]["knn_neighbours"],
        seed=config["evaluation"]["seed"],
        protocols=config["evaluation"]["protocols"],
        k_v2=config["evaluation"]["v2_knn_neighbours"],
    script:
        "../scripts/property_predictions.py"


rule property_r2_table:
    input:
        predictions="results/tables/property_predictions.parquet",
        baselines=supervised_baseline_predictions(),
    output:
        report(
            "results/tables/property_r2.csv",
            caption="../report/property_r2.rst",
            category="4. Property prediction",
            subcategory="R² table",
            labels={"table": "R² (paper Table 1)"},
        ),
    log:
        "results/logs/property_r2_table.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("property_r2_table.py"),
        source=config["source"],
    script:
        "../scripts/property_r2_table.py"


rule photoz_table:
    input:
        "results/tables/property_predictions.parquet",
    output:
        report(
            "results/tables/photoz_metrics.csv",
            caption="../report/photoz_metrics.rst",
            category="4. Property prediction",
            subcategory="Redshift",
            labels={"table": "bias, σ_NMAD, outliers"},
        ),
    log:
        "results/logs/photoz_table.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("photoz_table.py"),
    script:
        "../scripts/photoz_table.py"


rule plot_predicted_vs_true:
    input:
        "results/tables/property_predictions.parquet",
    output:
        report(
            "results/figures/evaluation/predicted_vs_true_{mode}.png",
            caption="../report/predicted_vs_true.rst",
            category="4. Property prediction",
            subcategory="Predicted vs true",
            labels={"mode": "{mode}"},
        ),
    log:
        "results/logs/plot_predicted_vs_true_{mode}.log",
    wildcard_constraints:
        mode="image|spectrum|cross",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_predicted_vs_true.py"),
    script:
        "../scripts/plot_predicted_vs_true.py"
