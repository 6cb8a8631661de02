from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_targets

log_to_file(snakemake.log[0])
write_targets(
    MockSurveySpec.from_config(snakemake.params.mock),
    targets_path=snakemake.output.targets,
    galaxies_path=snakemake.output.galaxies,
)
