from astroclip_pipeline.evaluate.morphology_figures import plot_surest_galaxies
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_surest_galaxies(
    snakemake.input.predictions, snakemake.input.datasets, snakemake.output[0], snakemake.params.per_answer
)
