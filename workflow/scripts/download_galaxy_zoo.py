from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.galaxy_zoo import validate_volunteer_catalogue
from astroclip_pipeline.sources.http import fetcher_from_config

log_to_file(snakemake.log[0])
# How politely to fetch comes from the config, not params: it does not change the file's bytes.
fetcher_from_config(snakemake.config["downloads"]).download_file(
    snakemake.params.url, snakemake.output[0], validate_file=validate_volunteer_catalogue
)
