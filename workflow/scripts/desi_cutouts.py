from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.desi_edr import download_cutouts_shard
from astroclip_pipeline.sources.http import fetcher_from_config
from astroclip_pipeline.sources.legacysurvey import CutoutSpec

log_to_file(snakemake.log[0])
download_cutouts_shard(
    snakemake.input.targets,
    int(snakemake.wildcards.shard),
    snakemake.output.cutouts,
    snakemake.output.missing,
    # politeness settings come from the config, not params: they do not change the shard's bytes,
    # so changing them mid-run must not redo finished shards
    fetcher_from_config(snakemake.config["downloads"]),
    CutoutSpec(**snakemake.params.cutouts),
    record_failures=snakemake.config["downloads"]["record_failures"],
)
