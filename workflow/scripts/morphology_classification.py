from astroclip_pipeline.evaluate.morphology import MorphologyProtocol, write_morphology
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_morphology(
    snakemake.input.embeddings,
    snakemake.input.backbone,
    snakemake.input.datasets,
    snakemake.input.catalogue,
    snakemake.output.predictions,
    snakemake.output.metrics,
    snakemake.output.counts,
    MorphologyProtocol(**snakemake.params.protocol),
    snakemake.params.seed,
)
