from astroclip_pipeline.evaluate.property_prediction import write_predictions
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_predictions(
    snakemake.input.embeddings,
    snakemake.input.backbone,
    snakemake.output[0],
    snakemake.params.k,
    snakemake.params.seed,
    snakemake.params.protocols,
    snakemake.params.k_v2,
    snakemake.input.get("training_embeddings"),
    snakemake.input.get("training_backbone"),
)
