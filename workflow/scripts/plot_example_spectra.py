from astroclip_pipeline.evaluate.overview import plot_example_spectra
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_example_spectra(snakemake.input.dataset, snakemake.output[0], n=snakemake.params.n, seed=snakemake.params.seed)
