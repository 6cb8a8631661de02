# evaluation.compare_image_encoders: the ViT/DINO, ResNet/MoCo and random-weight ViT backbones, each
# aligned with the same spectrum encoder and settings, scored by one k-NN R² table. This run's own
# backbone is reused from results/models/; the others are made under results/comparison/{backbone}/
# (pretrain_images and pretrain_dino write there when it is not this run's backbone).

if COMPARE_ENCODERS:

    wildcard_constraints:
        backbone="|".join(b for b in COMPARED if b != own_backbone()),

    rule random_image_encoder:
        output:
            "results/comparison/random/image_encoder.ckpt",
        log:
            "results/logs/random_image_encoder.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("random_image_encoder.py"),
            model=image_encoder_params("vit"),
            seed=config["evaluation"]["seed"],
        script:
            "../scripts/random_image_encoder.py"

    use rule align as compare_align with:
        input:
            train="results/data/train.h5",
            val="results/data/val.h5",
            spectrum_encoder="results/models/spectrum_encoder.ckpt",
            image_encoder="results/comparison/{backbone}/image_encoder.ckpt",
        output:
            model="results/comparison/{backbone}/astroclip.ckpt",
            metrics="results/comparison/{backbone}/alignment_metrics.csv",
        log:
            "results/logs/compare_align_{backbone}.log",
        benchmark:
            "results/benchmarks/compare_align_{backbone}.tsv"

    use rule embed as compare_embed with:
        input:
            model="results/comparison/{backbone}/astroclip.ckpt",
            dataset="results/data/{split}.h5",
        output:
            "results/comparison/{backbone}/embeddings/{split}.h5",
        log:
            "results/logs/compare_embed_{backbone}_{split}.log",

    rule image_encoder_comparison:
        input:
            encoders=[comparison_file(b, "image_encoder.ckpt") for b in COMPARED],
            embeddings=[compared_embeddings(b) for b in COMPARED],
            datasets=["results/data/val.h5", "results/data/test.h5"],
        output:
            report(
                "results/tables/image_encoder_comparison.csv",
                caption="../report/image_encoder_comparison.rst",
                category="4. Property prediction",
                subcategory="Image backbones",
                labels={"table": "ViT/DINO vs ResNet/MoCo vs random ViT"},
            ),
        log:
            "results/logs/image_encoder_comparison.log",
        conda:
            "../../envs/astroclip.yaml"
        threads: TORCH_THREADS
        params:
            code=library_code("image_encoder_comparison.py"),
            labels=[COMPARED_LABELS[b] for b in COMPARED],
            embeddings=[compared_embeddings(b) for b in COMPARED],
            k=config["evaluation"]["knn_neighbours"],
            seed=config["evaluation"]["seed"],
        script:
            "../scripts/image_encoder_comparison.py"
