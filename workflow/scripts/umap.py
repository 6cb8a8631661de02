from astroclip_pipeline.evaluate.structure import write_umap_tables
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
write_umap_tables(
    snakemake.input.embeddings,
    snakemake.params.splits,
    {modality: path for modality, path in zip(("image", "spectrum", "combined"), snakemake.output, strict=True)},
    n_neighbors=settings["n_neighbors"],
    min_dist=settings["min_dist"],
    seed=settings["seed"],
)
