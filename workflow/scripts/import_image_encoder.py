from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.image_encoder import import_published

log_to_file(snakemake.log[0])
import_published(
    snakemake.input.weights,
    snakemake.output.encoder,
    preset=snakemake.params.model["preset"],
    crop=snakemake.params.model["crop"],
)
