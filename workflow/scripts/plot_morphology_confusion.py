from astroclip_pipeline.evaluate.morphology_figures import plot_confusion_matrices
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_confusion_matrices(snakemake.input[0], snakemake.output[0])
