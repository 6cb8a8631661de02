from astroclip_pipeline.evaluate.overview import plot_distributions
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_distributions(snakemake.input.datasets, snakemake.output[0])
