from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.image_encoder import write_random_vit

log_to_file(snakemake.log[0])
write_random_vit(snakemake.output[0], dict(snakemake.params.model), snakemake.params.seed)
