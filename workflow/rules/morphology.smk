# Galaxy morphology (AstroCLIP v2): Galaxy Zoo DECaLS votes, per-question classifiers on the
# held-out embeddings, and the mock survey's morphology gallery.


rule mock_galaxy_zoo:
    input:
        galaxies=f"{MOCK_RAW}/galaxies.parquet",
    output:
        f"{MOCK_RAW}/{GALAXY_ZOO_CATALOGUE}",
    log:
        "results/logs/mock_galaxy_zoo.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("mock_galaxy_zoo.py"),
        mock=config["mock"],
    script:
        "../scripts/mock_galaxy_zoo.py"


rule download_galaxy_zoo:
    output:
        galaxy_zoo_download(),
    log:
        "results/logs/download_galaxy_zoo.log",
    benchmark:
        "results/benchmarks/download_galaxy_zoo.tsv"
    localrule: DOWNLOADS_LOCAL
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("download_galaxy_zoo.py"),
        url=config["morphology"]["catalogue"],
    script:
        "../scripts/download_galaxy_zoo.py"


rule morphology_classification:
    input:
        embeddings=HELD_OUT,
        backbone="results/features/backbones_heldout.h5",
        datasets=["results/data/val.h5", "results/data/test.h5"],  # HELD_OUT's sources, for the moments
        catalogue=galaxy_zoo_catalogue(),
    output:
        predictions="results/tables/morphology_predictions.parquet",
        metrics=report(
            "results/tables/morphology_metrics.csv",
            caption="../report/morphology_metrics.rst",
            category="7. Morphology",
            subcategory="Scores",
            labels={"table": "accuracy and weighted F1 per question"},
        ),
        counts=report(
            "results/tables/morphology_cuts.csv",
            caption="../report/morphology_cuts.rst",
            category="7. Morphology",
            subcategory="Scores",
            labels={"table": "cross-match and protocol counts"},
        ),
    log:
        "results/logs/morphology_classification.log",
    benchmark:
        "results/benchmarks/morphology_classification.tsv"
    conda:
        "../../envs/astroclip.yaml"
    # Small MLPs: on 2 busy cores one torch thread trained a classifier in 1.8 s, two threads in 48 s.
    threads: 1
    params:
        code=library_code("morphology_classification.py"),
        protocol=morphology_protocol(),
        seed=config["evaluation"]["seed"],
    script:
        "../scripts/morphology_classification.py"


rule plot_morphology_scores:
    input:
        "results/tables/morphology_metrics.csv",
    output:
        report(
            "results/figures/morphology/scores.png",
            caption="../report/morphology_scores.rst",
            category="7. Morphology",
            subcategory="Figures",
            labels={"figure": "scores per question"},
        ),
    log:
        "results/logs/plot_morphology_scores.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_morphology_scores.py"),
    script:
        "../scripts/plot_morphology_scores.py"


rule plot_morphology_confusion:
    input:
        "results/tables/morphology_predictions.parquet",
    output:
        report(
            "results/figures/morphology/confusion.png",
            caption="../report/morphology_confusion.rst",
            category="7. Morphology",
            subcategory="Figures",
            labels={"figure": "confusion matrices"},
        ),
    log:
        "results/logs/plot_morphology_confusion.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_morphology_confusion.py"),
    script:
        "../scripts/plot_morphology_confusion.py"


rule plot_surest_galaxies:
    input:
        predictions="results/tables/morphology_predictions.parquet",
        datasets=["results/data/val.h5", "results/data/test.h5"],
    output:
        report(
            "results/figures/morphology/surest_galaxies.png",
            caption="../report/morphology_surest.rst",
            category="7. Morphology",
            subcategory="Figures",
            labels={"figure": "surest galaxies per answer"},
        ),
    log:
        "results/logs/plot_surest_galaxies.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_surest_galaxies.py"),
        per_answer=config["morphology"]["gallery_per_answer"],
    script:
        "../scripts/plot_surest_galaxies.py"


rule plot_morphology_gallery:
    input:
        dataset="results/data/val.h5",
    output:
        report(
            "results/figures/overview/morphology_gallery.png",
            caption="../report/morphology_gallery.rst",
            category="1. Data",
            subcategory="Overview",
            labels={"figure": "morphology gallery (mock truth)"},
        ),
    log:
        "results/logs/plot_morphology_gallery.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_morphology_gallery.py"),
        per_kind=config["morphology"]["gallery_per_answer"],
        seed=config["report"]["seed"],
    script:
        "../scripts/plot_morphology_gallery.py"
