# Stage 1 (raw shards from the source) and stage 2 (the dataset files), with the data overview.


checkpoint select_mock_targets:
    output:
        targets=f"{MOCK_RAW}/targets.parquet",
        galaxies=f"{MOCK_RAW}/galaxies.parquet",
    log:
        "results/logs/select_mock_targets.log",
    benchmark:
        "results/benchmarks/select_mock_targets.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("select_mock_targets.py"),
        mock=config["mock"],
    script:
        "../scripts/select_mock_targets.py"


rule mock_spectra:
    input:
        galaxies=f"{MOCK_RAW}/galaxies.parquet",
    output:
        spectra=f"{MOCK_RAW}/spectra/shard-{{shard}}.h5",
        missing=f"{MOCK_RAW}/spectra/missing-{{shard}}.csv",
    log:
        "results/logs/mock_spectra/shard-{shard}.log",
    benchmark:
        "results/benchmarks/mock_spectra/shard-{shard}.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("mock_spectra.py"),
        mock=config["mock"],
    script:
        "../scripts/mock_spectra.py"


rule mock_cutouts:
    input:
        galaxies=f"{MOCK_RAW}/galaxies.parquet",
    output:
        cutouts=f"{MOCK_RAW}/cutouts/shard-{{shard}}.h5",
        missing=f"{MOCK_RAW}/cutouts/missing-{{shard}}.csv",
    log:
        "results/logs/mock_cutouts/shard-{shard}.log",
    benchmark:
        "results/benchmarks/mock_cutouts/shard-{shard}.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("mock_cutouts.py"),
        mock=config["mock"],
    script:
        "../scripts/mock_cutouts.py"


rule build_dataset:
    input:
        targets=target_catalogue,
        spectra=raw_shards("spectra"),
        cutouts=raw_shards("cutouts"),
        missing=missing_lists,
    output:
        train="results/data/train.h5",
        val="results/data/val.h5",
        test="results/data/test.h5",
        counts=report(
            "results/tables/dataset_cuts.csv",
            caption="../report/dataset_cuts.rst",
            category="1. Data",
            subcategory="Dataset",
            labels={"table": "cuts and splits"},
        ),
    log:
        "results/logs/build_dataset.log",
    benchmark:
        "results/benchmarks/build_dataset.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("build_dataset.py"),
        split=config["dataset"]["split"],
    script:
        "../scripts/build_dataset.py"


rule plot_cutout_gallery:
    input:
        dataset="results/data/val.h5",
    output:
        report(
            "results/figures/overview/cutout_gallery.png",
            caption="../report/cutout_gallery.rst",
            category="1. Data",
            subcategory="Overview",
            labels={"figure": "cutout gallery"},
        ),
    log:
        "results/logs/plot_cutout_gallery.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_cutout_gallery.py"),
        n=config["report"]["gallery_size"],
        seed=config["report"]["seed"],
    script:
        "../scripts/plot_cutout_gallery.py"


rule plot_example_spectra:
    input:
        dataset="results/data/val.h5",
    output:
        report(
            "results/figures/overview/example_spectra.png",
            caption="../report/example_spectra.rst",
            category="1. Data",
            subcategory="Overview",
            labels={"figure": "example spectra"},
        ),
    log:
        "results/logs/plot_example_spectra.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_example_spectra.py"),
        n=config["report"]["example_spectra"],
        seed=config["report"]["seed"],
    script:
        "../scripts/plot_example_spectra.py"


rule plot_distributions:
    input:
        datasets=dataset_files(),
    output:
        report(
            "results/figures/overview/distributions.png",
            caption="../report/distributions.rst",
            category="1. Data",
            subcategory="Overview",
            labels={"figure": "distributions"},
        ),
    log:
        "results/logs/plot_distributions.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_distributions.py"),
    script:
        "../scripts/plot_distributions.py"
