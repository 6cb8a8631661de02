# model: published. The published AstroCLIP v2 files (Hugging Face polymathic-ai), fetched at a
# pinned revision and checked by SHA-256 (or a local copy, checked the same way), become this
# workflow's model files; the rules that would train them are outranked, so none of them runs
# (no image-encoder rule writes results/models/image_encoder.ckpt then: own_backbone() is None).


if PUBLISHED:

    ruleorder: import_published_specformer > pretrain_spectra
    ruleorder: import_published_astroclip > align

    rule download_published:
        output:
            "resources/published/{name}/{file}",
        log:
            "results/logs/download_published/{name}/{file}.log",
        benchmark:
            "results/benchmarks/download_published/{name}/{file}.tsv"
        wildcard_constraints:
            name="astroclip|specformer|astrodino",
        localrule: DOWNLOADS_LOCAL
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("download_published.py"),
            entry=lambda wildcards: config["published"][wildcards.name],
            key=lambda wildcards: f"published.{wildcards.name}",
            endpoint=config["published"]["endpoint"],
        script:
            "../scripts/download_published.py"

    rule record_published:
        input:
            lambda wildcards: published_file(wildcards.name),
        output:
            "results/models/published/{name}.json",
        log:
            "results/logs/record_published/{name}.log",
        wildcard_constraints:
            name="astroclip|specformer|astrodino",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("record_published.py"),
            entry=lambda wildcards: config["published"][wildcards.name],
            key=lambda wildcards: f"published.{wildcards.name}",
            source=lambda wildcards: (
                "local copy" if config["published"][wildcards.name]["path"] else "hub"
            ),
        script:
            "../scripts/record_published.py"

    rule import_published_specformer:
        input:
            checkpoint=published_file("specformer"),
            record="results/models/published/specformer.json",
        output:
            encoder="results/models/spectrum_encoder.ckpt",
        log:
            "results/logs/import_published_specformer.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("import_published_specformer.py"),
            n_heads=config["published"]["specformer_heads"],
        script:
            "../scripts/import_published_specformer.py"

    rule import_published_astrodino:
        input:
            checkpoint=published_file("astrodino"),
            record="results/models/published/astrodino.json",
        output:
            encoder="results/models/image_encoder.ckpt",
        log:
            "results/logs/import_published_astrodino.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("import_published_astrodino.py"),
            n_heads=config["published"]["vit_heads"],
            crop=config["published"]["crop"],
        script:
            "../scripts/import_published_astrodino.py"

    rule import_published_astroclip:
        input:
            checkpoint=published_file("astroclip"),
            record="results/models/published/astroclip.json",
        output:
            model="results/models/astroclip.ckpt",
        log:
            "results/logs/import_published_astroclip.log",
        conda:
            "../../envs/astroclip.yaml"
        params:
            code=library_code("import_published_astroclip.py"),
            spectrum_heads=config["published"]["specformer_heads"],
            vit_heads=config["published"]["vit_heads"],
            head_heads=config["published"]["head_heads"],
            crop=config["published"]["crop"],
        script:
            "../scripts/import_published_astroclip.py"
