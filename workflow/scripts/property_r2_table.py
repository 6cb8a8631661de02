from astroclip_pipeline.evaluate.property_prediction import write_r2_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_r2_table(
    snakemake.input.predictions,
    snakemake.output[0],
    snakemake.params.source,
    baseline_paths=list(snakemake.input.baselines),
)
