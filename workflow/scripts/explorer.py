from astroclip_pipeline.evaluate.explorer import write_explorer
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
splits = snakemake.params.splits
settings = snakemake.params.settings
write_explorer(
    snakemake.input.embeddings,
    splits,
    dataset_paths=dict(zip(splits, snakemake.input.datasets, strict=True)),
    umap_paths=dict(zip(["image", "spectrum", "combined"], snakemake.input.umaps, strict=True)),
    cluster_paths={
        "DBSCAN cluster (image UMAP)": snakemake.input.dbscan,
        "k-means cluster (spectrum)": snakemake.input.kmeans,
    },
    output=snakemake.output[0],
    n_galaxies=settings["n_galaxies"],
    per_cluster_min=settings["per_cluster_min"],
    top_k=settings["top_k"],
    spectrum_bin=settings["spectrum_bin"],
    seed=settings["seed"],
)
