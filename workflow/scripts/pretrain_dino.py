from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.train.dino import pretrain_dino

log_to_file(snakemake.log[0])
pretrain_dino(
    train_path=snakemake.input.train,
    val_path=snakemake.input.val,
    run_dir=snakemake.params.run_dir,
    encoder_path=snakemake.output.encoder,
    metrics_path=snakemake.output.metrics,
    model=dict(snakemake.params.model),
    settings=dict(snakemake.params.settings),
    cpu_fallback=snakemake.params.cpu_fallback,
    code_version=snakemake.params.code,
)
