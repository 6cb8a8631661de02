from astroclip_pipeline.evaluate.structure import write_dbscan_clusters
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
write_dbscan_clusters(snakemake.input.umap, snakemake.output[0], settings["eps"], settings["min_samples"])
