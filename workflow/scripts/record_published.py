from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.hub import record_published

log_to_file(snakemake.log[0])
record_published(
    dict(snakemake.params.entry), snakemake.input[0], snakemake.params.key, snakemake.output[0], snakemake.params.source
)
