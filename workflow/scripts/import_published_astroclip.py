from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.models.published import import_published_astroclip

log_to_file(snakemake.log[0])
import_published_astroclip(
    checkpoint=snakemake.input.checkpoint,
    record=snakemake.input.record,
    output=snakemake.output.model,
    spectrum_heads=snakemake.params.spectrum_heads,
    image_heads=snakemake.params.vit_heads,
    head_heads=snakemake.params.head_heads,
    crop=snakemake.params.crop,
)
