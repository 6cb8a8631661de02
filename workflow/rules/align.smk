# Stage 4: contrastive alignment (AstroCLIP), and stage 5: the embeddings of the held-out splits.


rule align:
    input:
        train="results/data/train.h5",
        val="results/data/val.h5",
        spectrum_encoder="results/models/spectrum_encoder.ckpt",
        image_encoder="results/models/image_encoder.ckpt",
    output:
        model="results/models/astroclip.ckpt",
        metrics="results/tables/alignment_metrics.csv",
    log:
        "results/logs/align.log",
    benchmark:
        "results/benchmarks/align.tsv"
    conda:
        "../../envs/astroclip.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=config["align"]["gpus"],
    params:
        code=library_code("align.py"),
        settings=config["align"],
        cpu_fallback=config["allow_cpu_fallback"],
        run_dir=run_dir_of("model"),
    script:
        "../scripts/align.py"


rule plot_alignment:
    input:
        metrics="results/tables/alignment_metrics.csv",
    output:
        report(
            "results/figures/align/alignment_loss.png",
            caption="../report/alignment_loss.rst",
            category="3. Alignment",
            subcategory="Training",
            labels={"figure": "loss curves"},
        ),
    log:
        "results/logs/plot_alignment.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_training_curves.py"),
    script:
        "../scripts/plot_training_curves.py"


rule embed:
    input:
        model="results/models/astroclip.ckpt",
        dataset="results/data/{split}.h5",
    output:
        "results/embeddings/{split}.h5",
    log:
        "results/logs/embed_{split}.log",
    conda:
        "../../envs/astroclip.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=config["align"]["gpus"],
    params:
        code=library_code("embed.py"),
        gpus=config["align"]["gpus"],
        cpu_fallback=config["allow_cpu_fallback"],
    script:
        "../scripts/embed.py"


rule retrieval_table:
    input:
        embeddings="results/embeddings/test.h5",
    output:
        report(
            "results/tables/retrieval.csv",
            caption="../report/retrieval.rst",
            category="3. Alignment",
            subcategory="Cross-modal retrieval",
            labels={"table": "recall@k on the test split"},
        ),
    log:
        "results/logs/retrieval_table.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("retrieval_table.py"),
    script:
        "../scripts/retrieval_table.py"
