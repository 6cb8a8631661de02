import pandas as pd

from astroclip_pipeline.evaluate.structure_figures import plot_cluster_cutouts, plot_dbscan_umap
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
inputs, params, gallery = snakemake.input, snakemake.params, snakemake.params.gallery
truth_table = inputs.truth_table[0] if inputs.truth_table else None
# The cluster that best matches the artefact flag leads the gallery, whatever its size.
first = pd.read_csv(truth_table).query("best_match").cluster.tolist() if truth_table else []
plot_dbscan_umap(inputs.umap, inputs.clusters, inputs.embeddings, params.splits, snakemake.output.umap, truth_table)
plot_cluster_cutouts(
    inputs.clusters,
    inputs.embeddings,
    params.splits,
    inputs.datasets,
    snakemake.output.cutouts,
    title="DBSCAN clusters of the image UMAP",
    per_cluster=gallery["cutouts_per_cluster"],
    max_clusters=gallery["max_clusters"],
    seed=params.seed,
    first=first,
)
