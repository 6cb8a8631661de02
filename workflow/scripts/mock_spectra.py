from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_spectra

log_to_file(snakemake.log[0])
write_spectra(
    MockSurveySpec.from_config(snakemake.params.mock),
    galaxies_path=snakemake.input.galaxies,
    shard=int(snakemake.wildcards.shard),
    spectra_path=snakemake.output.spectra,
    missing_path=snakemake.output.missing,
)
