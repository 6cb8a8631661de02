from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.astroclip_hdf5 import convert_spectra_shard

log_to_file(snakemake.log[0])
convert_spectra_shard(
    snakemake.input.hdf5,
    snakemake.input.targets,
    int(snakemake.wildcards.shard),
    snakemake.output.spectra,
    snakemake.output.missing,
)
