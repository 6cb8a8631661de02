from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.image_encoder import import_weights

log_to_file(snakemake.log[0])
import_weights(snakemake.input.weights, snakemake.output.encoder, dict(snakemake.params.model))
