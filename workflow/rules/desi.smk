# Stage 1 for the real sources: "desi-edr" (EDR spectra, Legacy Survey cutouts, PROVABGS) and
# "astroclip-hdf5" (the AstroCLIP authors' prepared file). Both write the raw shards of the mock
# survey's rules, under their own resources/{source}/, and build_dataset reads whichever is chosen.
# Download rules are local by default and hold their service's resource (see common.smk).


rule download_desi_zcatalog:
    output:
        desi_download("zcatalog"),
    log:
        "results/logs/download_desi_zcatalog.log",
    benchmark:
        "results/benchmarks/download_desi_zcatalog.tsv"
    localrule: DOWNLOADS_LOCAL
    conda:
        "../../envs/astroclip.yaml"
    resources:
        desi_archive=1,
    params:
        code=library_code("download_desi_zcatalog.py"),
        url=desi_release_url("zcatalog"),
    script:
        "../scripts/download_desi_zcatalog.py"


rule download_provabgs:
    output:
        desi_download("provabgs"),
    log:
        "results/logs/download_provabgs.log",
    benchmark:
        "results/benchmarks/download_provabgs.tsv"
    localrule: DOWNLOADS_LOCAL
    conda:
        "../../envs/astroclip.yaml"
    resources:
        desi_archive=1,
    params:
        code=library_code("download_provabgs.py"),
        url=desi_release_url("provabgs"),
    script:
        "../scripts/download_provabgs.py"


checkpoint select_desi_targets:
    input:
        zcatalog=desi_release_file("zcatalog"),
        provabgs=desi_release_file("provabgs"),
    output:
        targets=f"{DESI_RAW}/targets.parquet",
    log:
        "results/logs/select_desi_targets.log",
    benchmark:
        "results/benchmarks/select_desi_targets.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("select_desi_targets.py"),
        selection=desi_selection(),
    script:
        "../scripts/select_desi_targets.py"


rule desi_spectra:
    input:
        targets=f"{DESI_RAW}/targets.parquet",
    output:
        spectra=f"{DESI_RAW}/spectra/shard-{{shard}}.h5",
        missing=f"{DESI_RAW}/spectra/missing-{{shard}}.csv",
    log:
        "results/logs/desi_spectra/shard-{shard}.log",
    benchmark:
        "results/benchmarks/desi_spectra/shard-{shard}.tsv"
    localrule: DOWNLOADS_LOCAL and DESI_SPECTRA_FROM_NETWORK
    conda:
        "../../envs/astroclip.yaml"
    resources:
        sparcl=int(config["desi"]["spectra_backend"] == "sparcl"),
        desi_archive=int(
            config["desi"]["spectra_backend"] == "coadd" and DESI_SPECTRA_FROM_NETWORK
        ),
    params:
        code=library_code("desi_spectra.py"),
        spectra=desi_spectra_params(),
    script:
        "../scripts/desi_spectra.py"


rule desi_cutouts:
    input:
        targets=f"{DESI_RAW}/targets.parquet",
    output:
        cutouts=f"{DESI_RAW}/cutouts/shard-{{shard}}.h5",
        missing=f"{DESI_RAW}/cutouts/missing-{{shard}}.csv",
    log:
        "results/logs/desi_cutouts/shard-{shard}.log",
    benchmark:
        "results/benchmarks/desi_cutouts/shard-{shard}.tsv"
    localrule: DOWNLOADS_LOCAL
    conda:
        "../../envs/astroclip.yaml"
    resources:
        legacysurvey=1,
    params:
        code=library_code("desi_cutouts.py"),
        cutouts=config["legacysurvey"],
    script:
        "../scripts/desi_cutouts.py"


rule download_astroclip_hdf5:
    output:
        astroclip_hdf5_download(),
    log:
        "results/logs/download_astroclip_hdf5.log",
    benchmark:
        "results/benchmarks/download_astroclip_hdf5.tsv"
    localrule: DOWNLOADS_LOCAL
    conda:
        "../../envs/astroclip.yaml"
    resources:
        astroclip_hdf5=1,
    params:
        code=library_code("download_astroclip_hdf5.py"),
        url=config["astroclip_hdf5"]["url"],
    script:
        "../scripts/download_astroclip_hdf5.py"


checkpoint select_astroclip_hdf5_targets:
    input:
        hdf5=astroclip_hdf5_file(),
        provabgs=desi_release_file("provabgs"),
    output:
        targets=f"{ASTROCLIP_RAW}/targets.parquet",
    log:
        "results/logs/select_astroclip_hdf5_targets.log",
    benchmark:
        "results/benchmarks/select_astroclip_hdf5_targets.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("select_astroclip_hdf5_targets.py"),
        selection={
            key: config["astroclip_hdf5"][key]
            for key in ("targets_per_shard", "max_targets", "groups")
        },
    script:
        "../scripts/select_astroclip_hdf5_targets.py"


rule astroclip_hdf5_spectra:
    input:
        hdf5=astroclip_hdf5_file(),
        targets=f"{ASTROCLIP_RAW}/targets.parquet",
    output:
        spectra=f"{ASTROCLIP_RAW}/spectra/shard-{{shard}}.h5",
        missing=f"{ASTROCLIP_RAW}/spectra/missing-{{shard}}.csv",
    log:
        "results/logs/astroclip_hdf5_spectra/shard-{shard}.log",
    benchmark:
        "results/benchmarks/astroclip_hdf5_spectra/shard-{shard}.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("astroclip_hdf5_spectra.py"),
    script:
        "../scripts/astroclip_hdf5_spectra.py"


rule astroclip_hdf5_cutouts:
    input:
        hdf5=astroclip_hdf5_file(),
        targets=f"{ASTROCLIP_RAW}/targets.parquet",
    output:
        cutouts=f"{ASTROCLIP_RAW}/cutouts/shard-{{shard}}.h5",
        missing=f"{ASTROCLIP_RAW}/cutouts/missing-{{shard}}.csv",
    log:
        "results/logs/astroclip_hdf5_cutouts/shard-{shard}.log",
    benchmark:
        "results/benchmarks/astroclip_hdf5_cutouts/shard-{shard}.tsv"
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("astroclip_hdf5_cutouts.py"),
    script:
        "../scripts/astroclip_hdf5_cutouts.py"
