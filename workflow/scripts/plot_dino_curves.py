from astroclip_pipeline.evaluate.training_curves import plot_dino_curves
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_dino_curves(snakemake.input.metrics, snakemake.output[0])
