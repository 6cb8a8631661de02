# Stage 6c: the explorer, one self-contained page to browse the held-out galaxies' embedding space.


rule explorer:
    input:
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
        datasets=expand("results/data/{split}.h5", split=config["structure"]["splits"]),
        umaps=expand(
            "results/tables/umap_{modality}.parquet",
            modality=["image", "spectrum", "combined"],
        ),
        dbscan="results/tables/dbscan_image_clusters.csv",
        kmeans="results/tables/kmeans_spectrum_clusters.csv",
    output:
        report(
            "results/explorer.html",
            caption="../report/explorer.rst",
            category="6. Explorer",
            labels={"page": "embedding-space explorer"},
        ),
    log:
        "results/logs/explorer.log",
    benchmark:
        "results/benchmarks/explorer.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("explorer.py"),
        splits=config["structure"]["splits"],
        settings=config["explorer"],
    script:
        "../scripts/explorer.py"
