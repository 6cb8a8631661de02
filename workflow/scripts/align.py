from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.train.alignment import align

log_to_file(snakemake.log[0])
align(
    train_path=snakemake.input.train,
    val_path=snakemake.input.val,
    spectrum_encoder_path=snakemake.input.spectrum_encoder,
    image_encoder_path=snakemake.input.image_encoder,
    run_dir=snakemake.params.run_dir,
    model_path=snakemake.output.model,
    metrics_path=snakemake.output.metrics,
    settings=dict(snakemake.params.settings),
    cpu_fallback=snakemake.params.cpu_fallback,
    code_version=snakemake.params.code,
)
