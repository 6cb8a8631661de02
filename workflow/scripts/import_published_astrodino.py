from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.published import import_published_astrodino

log_to_file(snakemake.log[0])
import_published_astrodino(
    snakemake.input.checkpoint, snakemake.output.encoder, snakemake.params.n_heads, snakemake.params.crop
)
