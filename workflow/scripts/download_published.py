from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.hub import fetch_published

log_to_file(snakemake.log[0])
fetch_published(dict(snakemake.params.entry), snakemake.output[0], snakemake.params.key, snakemake.params.endpoint)
