from astroclip_pipeline.evaluate.mask_filling import plot_mask_filling
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_mask_filling(
    snakemake.input.encoder,
    snakemake.input.dataset,
    snakemake.output[0],
    n_examples=snakemake.params.n_examples,
    n_chunks=snakemake.params.mask_chunks,
    chunk_length=snakemake.params.mask_chunk_length,
    seed=snakemake.params.seed,
)
