from astroclip_pipeline.evaluate.headline import write_headline_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
# The morphology metrics are an input only where there are Galaxy Zoo labels: a list of 0 or 1.
morphology = list(snakemake.input.morphology)
write_headline_table(
    snakemake.input.r2, morphology[0] if morphology else None, snakemake.output.table, snakemake.output.summary
)
