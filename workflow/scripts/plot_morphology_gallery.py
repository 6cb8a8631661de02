from astroclip_pipeline.evaluate.overview import plot_morphology_gallery
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_morphology_gallery(snakemake.input.dataset, snakemake.output[0], snakemake.params.per_kind, snakemake.params.seed)
