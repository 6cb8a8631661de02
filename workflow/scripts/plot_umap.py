from astroclip_pipeline.evaluate.structure import MODALITIES
from astroclip_pipeline.evaluate.structure_figures import plot_umaps
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
umap_paths = {
    modality: next(p for p in snakemake.input.umaps if p.endswith(f"_{modality}.parquet")) for modality in MODALITIES
}
plot_umaps(umap_paths, snakemake.input.embeddings, snakemake.params.splits, snakemake.output[0])
