from astroclip_pipeline.evaluate.property_prediction import write_photoz_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_photoz_table(snakemake.input[0], snakemake.output[0])
