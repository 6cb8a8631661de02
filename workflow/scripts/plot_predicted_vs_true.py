import pandas as pd

from astroclip_pipeline.evaluate.property_figures import plot_predicted_vs_true
from astroclip_pipeline.evaluate.property_prediction import KNN_MODES
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
plot_predicted_vs_true(pd.read_parquet(snakemake.input[0]), KNN_MODES[snakemake.wildcards.mode], snakemake.output[0])
