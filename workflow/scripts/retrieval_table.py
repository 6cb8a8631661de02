from astroclip_pipeline.evaluate.retrieval import write_retrieval_table
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
write_retrieval_table(snakemake.input.embeddings, snakemake.output[0])
