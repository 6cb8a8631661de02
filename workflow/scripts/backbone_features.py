from astroclip_pipeline.evaluate.backbone_features import write_backbone_features
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_backbone_features(
    snakemake.input.image_encoder, snakemake.input.spectrum_encoder, snakemake.input.datasets, snakemake.output[0]
)
