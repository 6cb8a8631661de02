from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.mock.galaxy_zoo import write_galaxy_zoo
from astroclip_pipeline.sources.mock.survey import MockSurveySpec

log_to_file(snakemake.log[0])
write_galaxy_zoo(MockSurveySpec.from_config(snakemake.params.mock), snakemake.input.galaxies, snakemake.output[0])
