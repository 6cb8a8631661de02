# Stage 3b: the image encoder, pretrained here with MoCo v2 (a ViT: pretrain_dino in pretrain.smk)
# or imported from published weights. With evaluation.compare_image_encoders, the backbone this run
# does not use is pretrained too, under results/comparison/ (comparison_file in common.smk).


if pretrained_here("moco"):

    rule pretrain_images:
        input:
            train="results/data/train.h5",
            val="results/data/val.h5",
        output:
            encoder=comparison_file("moco", "image_encoder.ckpt"),
            metrics=pretraining_metrics_file("moco"),
        log:
            "results/logs/pretrain_images.log",
        benchmark:
            "results/benchmarks/pretrain_images.tsv"
        conda:
            "../../envs/astroclip.yaml"
        threads: TORCH_THREADS
        resources:
            gpu=config["pretrain_images"]["gpus"],
        params:
            code=library_code("pretrain_images.py"),
            model=image_encoder_params("resnet"),
            settings=config["pretrain_images"],
            cpu_fallback=config["allow_cpu_fallback"],
            run_dir=run_dir_of("encoder"),
        script:
            "../scripts/pretrain_images.py"


if own_backbone() == "moco":

    rule plot_image_pretraining:
        input:
            metrics="results/tables/image_pretraining_metrics.csv",
        output:
            report(
                "results/figures/pretrain/image_loss.png",
                caption="../report/image_loss.rst",
                category="2. Pretraining",
                subcategory="Image encoder",
                labels={"figure": "loss curves"},
            ),
        log:
            "results/logs/plot_image_pretraining.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("plot_training_curves.py"),
        script:
            "../scripts/plot_training_curves.py"


if config["image_encoder"]["weights"] is not None and not PUBLISHED:

    rule import_image_encoder:
        input:
            weights=config["image_encoder"]["weights"],
        output:
            encoder="results/models/image_encoder.ckpt",
        log:
            "results/logs/import_image_encoder.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("import_image_encoder.py"),
            model=image_encoder_params(),
        script:
            "../scripts/import_image_encoder.py"


rule image_backbone_knn:
    input:
        encoder="results/models/image_encoder.ckpt",
        dataset="results/data/val.h5",
    output:
        report(
            "results/tables/image_backbone_knn.csv",
            caption="../report/image_backbone_knn.rst",
            category="2. Pretraining",
            subcategory="Image encoder",
            labels={"table": "k-NN R² before alignment"},
        ),
    log:
        "results/logs/image_backbone_knn.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("image_backbone_knn.py"),
        k=config["evaluation"]["knn_neighbours"],
        seed=config["evaluation"]["seed"],
    script:
        "../scripts/image_backbone_knn.py"
