from astroclip_pipeline.evaluate.mask_filling import write_mask_filling_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_mask_filling_table(
    snakemake.input.encoder,
    snakemake.input.dataset,
    snakemake.output[0],
    n_chunks=snakemake.params.mask_chunks,
    chunk_length=snakemake.params.mask_chunk_length,
    seed=snakemake.params.seed,
)
