from astroclip_pipeline.evaluate.structure import write_cluster_truth_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_cluster_truth_table(
    snakemake.input.clusters, snakemake.input.embeddings, snakemake.params.splits, snakemake.output[0]
)
