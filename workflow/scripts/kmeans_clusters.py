from astroclip_pipeline.evaluate.structure import write_kmeans_clusters
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
write_kmeans_clusters(
    snakemake.input.embeddings,
    snakemake.params.splits,
    snakemake.output.clusters,
    snakemake.output.silhouette,
    k_min=settings["k_min"],
    k_max=settings["k_max"],
    seed=settings["seed"],
)
