from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.desi_edr import TargetSelection, write_targets

log_to_file(snakemake.log[0])
write_targets(
    snakemake.input.zcatalog,
    snakemake.input.provabgs,
    TargetSelection.from_config(snakemake.params.selection),
    snakemake.output.targets,
)
