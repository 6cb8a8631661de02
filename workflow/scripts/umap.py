from astroclip_pipeline.evaluate.structure import write_umap_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
write_umap_table(
    snakemake.input.embeddings,
    snakemake.params.splits,
    snakemake.wildcards.modality,
    snakemake.output[0],
    n_neighbors=settings["n_neighbors"],
    min_dist=settings["min_dist"],
    seed=settings["seed"],
)
