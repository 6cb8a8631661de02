# Stage 6b: retrieval figures, and the structure of the embedding space (the reproduction's
# extension): UMAP of each modality once, then DBSCAN on the image UMAP and k-means on the
# spectrum embeddings; the plotting rules only read tables, so restyling refits nothing.


rule plot_retrieval_examples:
    input:
        embeddings="results/embeddings/test.h5",
        dataset="results/data/test.h5",
    output:
        report(
            "results/figures/retrieval/retrieval_examples.png",
            caption="../report/retrieval_examples.rst",
            category="3. Alignment",
            subcategory="Cross-modal retrieval",
            labels={"figure": "nearest neighbours, four pairs"},
        ),
    log:
        "results/logs/plot_retrieval_examples.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_retrieval_examples.py"),
        n_queries=config["structure"]["retrieval_queries"],
        top_k=config["structure"]["top_k"],
        seed=config["structure"]["seed"],
    script:
        "../scripts/plot_retrieval_examples.py"


rule plot_spectral_retrieval:
    input:
        embeddings="results/embeddings/test.h5",
        dataset="results/data/test.h5",
    output:
        report(
            "results/figures/retrieval/spectral_retrieval.png",
            caption="../report/spectral_retrieval.rst",
            category="3. Alignment",
            subcategory="Cross-modal retrieval",
            labels={"figure": "spectral retrieval"},
        ),
    log:
        "results/logs/plot_spectral_retrieval.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_spectral_retrieval.py"),
        n_queries=config["structure"]["spectral_queries"],
        top_k=config["structure"]["top_k"],
        seed=config["structure"]["seed"],
    script:
        "../scripts/plot_spectral_retrieval.py"


rule umap:
    input:
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
    # One job for the three maps: numba compiles UMAP's kernels afresh in each process (~30 s
    # on 2 cores, the maps themselves take ~5 s each), so one process pays it once.
    output:
        expand(
            "results/tables/umap_{modality}.parquet",
            modality=["image", "spectrum", "combined"],
        ),
    log:
        "results/logs/umap.log",
    benchmark:
        "results/benchmarks/umap.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("umap.py"),
        splits=config["structure"]["splits"],
        settings=config["structure"]["umap"],
    script:
        "../scripts/umap.py"


rule plot_umap:
    input:
        umaps=expand(
            "results/tables/umap_{modality}.parquet",
            modality=["image", "spectrum", "combined"],
        ),
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
    output:
        report(
            "results/figures/structure/umap.png",
            caption="../report/umap.rst",
            category="5. Embedding structure",
            subcategory="UMAP",
            labels={"figure": "UMAP by redshift and mass"},
        ),
    log:
        "results/logs/plot_umap.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_umap.py"),
        splits=config["structure"]["splits"],
    script:
        "../scripts/plot_umap.py"


rule dbscan_clusters:
    input:
        umap="results/tables/umap_image.parquet",
    output:
        "results/tables/dbscan_image_clusters.csv",
    log:
        "results/logs/dbscan_clusters.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("dbscan_clusters.py"),
        settings=config["structure"]["dbscan"],
    script:
        "../scripts/dbscan_clusters.py"


rule dbscan_artefacts:
    input:
        clusters="results/tables/dbscan_image_clusters.csv",
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
    output:
        report(
            "results/tables/dbscan_artefacts.csv",
            caption="../report/dbscan_artefacts.rst",
            category="5. Embedding structure",
            subcategory="DBSCAN on the image UMAP",
            labels={"table": "clusters vs artefact truth"},
        ),
    log:
        "results/logs/dbscan_artefacts.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("dbscan_artefacts.py"),
        splits=config["structure"]["splits"],
    script:
        "../scripts/dbscan_artefacts.py"


rule plot_dbscan:
    input:
        umap="results/tables/umap_image.parquet",
        clusters="results/tables/dbscan_image_clusters.csv",
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
        datasets=expand("results/data/{split}.h5", split=config["structure"]["splits"]),
        # Only the mock survey knows which cutouts have artefacts.
        truth_table=(
            ["results/tables/dbscan_artefacts.csv"]
            if config["source"] == "mock"
            else []
        ),
    output:
        umap=report(
            "results/figures/structure/dbscan_umap.png",
            caption="../report/dbscan_umap.rst",
            category="5. Embedding structure",
            subcategory="DBSCAN on the image UMAP",
            labels={"figure": "image UMAP by cluster"},
        ),
        cutouts=report(
            "results/figures/structure/dbscan_cutouts.png",
            caption="../report/dbscan_cutouts.rst",
            category="5. Embedding structure",
            subcategory="DBSCAN on the image UMAP",
            labels={"figure": "cutouts per cluster"},
        ),
    log:
        "results/logs/plot_dbscan.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_dbscan.py"),
        splits=config["structure"]["splits"],
        gallery=config["structure"]["gallery"],
        seed=config["structure"]["seed"],
    script:
        "../scripts/plot_dbscan.py"


rule kmeans_clusters:
    input:
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
    output:
        clusters="results/tables/kmeans_spectrum_clusters.csv",
        silhouette="results/tables/kmeans_silhouette.csv",
    log:
        "results/logs/kmeans_clusters.log",
    benchmark:
        "results/benchmarks/kmeans_clusters.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("kmeans_clusters.py"),
        splits=config["structure"]["splits"],
        settings=config["structure"]["kmeans"],
    script:
        "../scripts/kmeans_clusters.py"


rule plot_kmeans:
    input:
        umaps=expand(
            "results/tables/umap_{modality}.parquet", modality=["spectrum", "image"]
        ),
        clusters="results/tables/kmeans_spectrum_clusters.csv",
        silhouette="results/tables/kmeans_silhouette.csv",
        embeddings=expand(
            "results/embeddings/{split}.h5", split=config["structure"]["splits"]
        ),
        datasets=expand("results/data/{split}.h5", split=config["structure"]["splits"]),
    output:
        silhouette=report(
            "results/figures/structure/kmeans_silhouette.png",
            caption="../report/kmeans_silhouette.rst",
            category="5. Embedding structure",
            subcategory="k-means on the spectrum embeddings",
            labels={"figure": "silhouette against k"},
        ),
        umap=report(
            "results/figures/structure/kmeans_umap.png",
            caption="../report/kmeans_umap.rst",
            category="5. Embedding structure",
            subcategory="k-means on the spectrum embeddings",
            labels={"figure": "UMAPs by cluster"},
        ),
        spectra=report(
            "results/figures/structure/kmeans_spectra.png",
            caption="../report/kmeans_spectra.rst",
            category="5. Embedding structure",
            subcategory="k-means on the spectrum embeddings",
            labels={"figure": "spectra per cluster"},
        ),
        cutouts=report(
            "results/figures/structure/kmeans_cutouts.png",
            caption="../report/kmeans_cutouts.rst",
            category="5. Embedding structure",
            subcategory="k-means on the spectrum embeddings",
            labels={"figure": "cutouts per cluster"},
        ),
    log:
        "results/logs/plot_kmeans.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("plot_kmeans.py"),
        splits=config["structure"]["splits"],
        gallery=config["structure"]["gallery"],
        seed=config["structure"]["seed"],
    script:
        "../scripts/plot_kmeans.py"
