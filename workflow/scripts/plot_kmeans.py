from astroclip_pipeline.evaluate.structure_figures import (
    plot_cluster_cutouts,
    plot_cluster_spectra,
    plot_kmeans_umaps,
    plot_silhouette,
)
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
inputs, output, params, gallery = snakemake.input, snakemake.output, snakemake.params, snakemake.params.gallery
umap_paths = {
    modality: next(p for p in inputs.umaps if p.endswith(f"_{modality}.parquet")) for modality in ("spectrum", "image")
}
plot_silhouette(inputs.silhouette, output.silhouette)
plot_kmeans_umaps(umap_paths, inputs.clusters, inputs.embeddings, params.splits, output.umap)
common = dict(max_clusters=gallery["max_clusters"], seed=params.seed)
plot_cluster_spectra(inputs.clusters, inputs.embeddings, params.splits, inputs.datasets, output.spectra,
                     per_cluster=gallery["spectra_per_cluster"], **common)  # fmt: skip
plot_cluster_cutouts(inputs.clusters, inputs.embeddings, params.splits, inputs.datasets, output.cutouts,
                     title="k-means clusters of the spectrum embeddings", per_cluster=gallery["cutouts_per_cluster"],
                     **common)  # fmt: skip
