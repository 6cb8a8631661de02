# Stage 6: the supervised baselines of the AstroCLIP v2 table (ResNet18 on images, Conv+Att on
# spectra), trained on the training split and evaluated on the k-NN's query galaxies; their
# predictions join the R² table (evaluate.smk) and the v2 headline table (headline.smk).


rule supervised_baseline:
    input:
        train="results/data/train.h5",
        val="results/data/val.h5",
        test="results/data/test.h5",
    output:
        "results/baselines/{baseline}_predictions.parquet",
    log:
        "results/logs/supervised_baseline_{baseline}.log",
    benchmark:
        "results/benchmarks/supervised_baseline_{baseline}.tsv"
    wildcard_constraints:
        baseline="resnet18|conv_att",
    conda:
        "../../envs/astroclip.yaml"
    # Small networks: on 2 busy cores one torch thread trained them 10-30 times faster than two
    # (README "Supervised baselines"), and the two baselines then run side by side.
    threads: 1
    params:
        code=library_code("supervised_baseline.py"),
        settings=supervised_baseline_settings(),
        crop=config["image_encoder"]["crop"],
        seed=config["evaluation"]["seed"],
    script:
        "../scripts/supervised_baseline.py"
