from astroclip_pipeline.evaluate.embeddings import embed_split
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
embed_split(
    snakemake.input.model,
    snakemake.input.dataset,
    snakemake.output[0],
    gpus=snakemake.params.gpus,
    cpu_fallback=snakemake.params.cpu_fallback,
)
