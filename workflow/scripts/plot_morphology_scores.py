from astroclip_pipeline.evaluate.morphology_figures import plot_morphology_scores
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_morphology_scores(snakemake.input[0], snakemake.output[0])
