from astroclip_pipeline.evaluate.encoder_comparison import write_image_encoder_comparison
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_image_encoder_comparison(
    labels=snakemake.params.labels,
    encoder_paths=snakemake.input.encoders,
    embedding_paths=snakemake.params.embeddings,
    dataset_paths=snakemake.input.datasets,
    output=snakemake.output[0],
    k=snakemake.params.k,
    seed=snakemake.params.seed,
)
