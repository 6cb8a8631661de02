from astroclip_pipeline.logs import log_to_file
from astroclip_pipeline.train.supervised import train_baseline

log_to_file(snakemake.log[0])
train_baseline(
    snakemake.wildcards.baseline,
    snakemake.input.train,
    snakemake.input.val,
    snakemake.input.test,
    snakemake.output[0],
    dict(snakemake.params.settings),
    snakemake.params.crop,
    snakemake.params.seed,
)
