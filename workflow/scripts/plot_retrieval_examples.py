from astroclip_pipeline.evaluate.retrieval_figures import plot_retrieval_examples
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
p = snakemake.params
plot_retrieval_examples(
    snakemake.input.embeddings, snakemake.input.dataset, snakemake.output[0], p.n_queries, p.top_k, p.seed
)
