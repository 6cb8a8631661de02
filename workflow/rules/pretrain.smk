# Stage 3a: masked-segment pretraining of the spectrum transformer, and what the report shows of it;
# stage 3b for a ViT image encoder: DINOv2 pretraining (the ResNet's MoCo v2 is in images.smk).


rule pretrain_spectra:
    input:
        train="results/data/train.h5",
        val="results/data/val.h5",
    output:
        encoder="results/models/spectrum_encoder.ckpt",
        metrics="results/tables/spectrum_pretraining_metrics.csv",
    log:
        "results/logs/pretrain_spectra.log",
    benchmark:
        "results/benchmarks/pretrain_spectra.tsv"
    conda:
        "../../envs/astroclip.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=config["pretrain_spectra"]["gpus"],
    params:
        code=library_code("pretrain_spectra.py"),
        model=config["spectrum_encoder"],
        settings=config["pretrain_spectra"],
        cpu_fallback=config["allow_cpu_fallback"],
        # checkpoints live beside the output, not in it, so a failed or requeued job resumes
        run_dir=run_dir_of("encoder"),
    script:
        "../scripts/pretrain_spectra.py"


rule plot_spectrum_pretraining:
    input:
        metrics="results/tables/spectrum_pretraining_metrics.csv",
    output:
        report(
            "results/figures/pretrain/spectrum_loss.png",
            caption="../report/spectrum_loss.rst",
            category="2. Pretraining",
            subcategory="Spectrum transformer",
            labels={"figure": "loss curves"},
        ),
    log:
        "results/logs/plot_spectrum_pretraining.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_training_curves.py"),
    script:
        "../scripts/plot_training_curves.py"


rule mask_filling_table:
    input:
        encoder="results/models/spectrum_encoder.ckpt",
        dataset="results/data/val.h5",
    output:
        report(
            "results/tables/mask_filling_mse.csv",
            caption="../report/mask_filling_mse.rst",
            category="2. Pretraining",
            subcategory="Spectrum transformer",
            labels={"table": "masked-region MSE"},
        ),
    log:
        "results/logs/mask_filling_table.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("mask_filling_table.py"),
        mask_chunks=config["pretrain_spectra"]["mask_chunks"],
        mask_chunk_length=config["pretrain_spectra"]["mask_chunk_length"],
        seed=config["pretrain_spectra"]["seed"],
    script:
        "../scripts/mask_filling_table.py"


rule plot_mask_filling:
    input:
        encoder="results/models/spectrum_encoder.ckpt",
        dataset="results/data/val.h5",
    output:
        report(
            "results/figures/pretrain/mask_filling.png",
            caption="../report/mask_filling.rst",
            category="2. Pretraining",
            subcategory="Spectrum transformer",
            labels={"figure": "mask filling"},
        ),
    log:
        "results/logs/plot_mask_filling.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_mask_filling.py"),
        n_examples=config["report"]["mask_filling_examples"],
        mask_chunks=config["pretrain_spectra"]["mask_chunks"],
        mask_chunk_length=config["pretrain_spectra"]["mask_chunk_length"],
        seed=config["report"]["seed"],
    script:
        "../scripts/plot_mask_filling.py"


if pretrained_here("dino"):

    rule pretrain_dino:
        input:
            train="results/data/train.h5",
            val="results/data/val.h5",
        output:
            encoder=comparison_file("dino", "image_encoder.ckpt"),
            metrics=pretraining_metrics_file("dino"),
        log:
            "results/logs/pretrain_dino.log",
        benchmark:
            "results/benchmarks/pretrain_dino.tsv"
        conda:
            "../../envs/astroclip.yaml"
        threads: TORCH_THREADS
        resources:
            gpu=config["pretrain_dino"]["gpus"],
        params:
            code=library_code("pretrain_dino.py"),
            model=image_encoder_params("vit"),
            settings=config["pretrain_dino"],
            cpu_fallback=config["allow_cpu_fallback"],
            run_dir=run_dir_of("encoder"),
        script:
            "../scripts/pretrain_dino.py"


if own_backbone() == "dino":

    rule plot_dino_pretraining:
        input:
            metrics="results/tables/image_pretraining_metrics.csv",
        output:
            report(
                "results/figures/pretrain/image_loss.png",
                caption="../report/dino_loss.rst",
                category="2. Pretraining",
                subcategory="Image encoder",
                labels={"figure": "loss curves"},
            ),
        log:
            "results/logs/plot_dino_pretraining.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("plot_dino_curves.py"),
        script:
            "../scripts/plot_dino_curves.py"


if IMAGE_ARCHITECTURE == "vit":

    rule plot_vit_attention:
        input:
            encoder="results/models/image_encoder.ckpt",
            dataset="results/data/val.h5",
        output:
            report(
                "results/figures/pretrain/vit_attention.png",
                caption="../report/vit_attention.rst",
                category="2. Pretraining",
                subcategory="Image encoder",
                labels={"figure": "CLS attention maps"},
            ),
        log:
            "results/logs/plot_vit_attention.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("plot_vit_attention.py"),
            n_examples=config["report"]["attention_examples"],
            seed=config["report"]["seed"],
        script:
            "../scripts/plot_vit_attention.py"
