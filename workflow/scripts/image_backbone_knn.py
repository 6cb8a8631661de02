from astroclip_pipeline.evaluate.backbone_knn import image_backbone_knn
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
image_backbone_knn(
    snakemake.input.encoder,
    snakemake.input.dataset,
    snakemake.output[0],
    k=snakemake.params.k,
    seed=snakemake.params.seed,
)
