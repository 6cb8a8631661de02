from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.published import import_published_specformer

log_to_file(snakemake.log[0])
import_published_specformer(snakemake.input.checkpoint, snakemake.output.encoder, snakemake.params.n_heads)
