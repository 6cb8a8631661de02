from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.astroclip_hdf5 import write_targets

log_to_file(snakemake.log[0])
write_targets(snakemake.input.hdf5, snakemake.input.provabgs, snakemake.output.targets, **snakemake.params.selection)
