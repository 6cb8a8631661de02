from astroclip_pipeline.evaluate.vit_attention import plot_vit_attention
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_vit_attention(
    snakemake.input.encoder,
    snakemake.input.dataset,
    snakemake.output[0],
    n=snakemake.params.n_examples,
    seed=snakemake.params.seed,
)
