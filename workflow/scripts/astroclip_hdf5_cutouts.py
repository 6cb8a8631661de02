from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.astroclip_hdf5 import convert_cutouts_shard

log_to_file(snakemake.log[0])
convert_cutouts_shard(
    snakemake.input.hdf5,
    snakemake.input.targets,
    int(snakemake.wildcards.shard),
    snakemake.output.cutouts,
    snakemake.output.missing,
)
