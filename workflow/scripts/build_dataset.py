from astroclip_pipeline.data.dataset_files import build_dataset
from astroclip_pipeline.logs import log_to_file

log_to_file(snakemake.log[0])
build_dataset(
    targets_path=snakemake.input.targets,
    spectra_paths=snakemake.input.spectra,
    cutout_paths=snakemake.input.cutouts,
    missing_paths=snakemake.input.missing,
    output_paths={split: snakemake.output[split] for split in ("train", "val", "test")},
    counts_path=snakemake.output.counts,
    split_fractions=dict(snakemake.params.split),
)
