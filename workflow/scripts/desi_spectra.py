from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.desi_edr import download_spectra_shard
from astroclip_pipeline.sources.http import fetcher_from_config

log_to_file(snakemake.log[0])
download_spectra_shard(
    snakemake.input.targets,
    int(snakemake.wildcards.shard),
    snakemake.output.spectra,
    snakemake.output.missing,
    # politeness settings come from the config, not params: they do not change the shard's bytes
    fetcher_from_config(snakemake.config["downloads"]),
    **snakemake.params.spectra,
)
