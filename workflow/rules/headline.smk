# The AstroCLIP v2 headline table, shown on the report's top page (workflow/report/workflow.rst).


rule v2_headline_table:
    input:
        r2="results/tables/property_r2.csv",
        morphology=morphology_metrics_table(),
    output:
        # the narrow "ours / published" version that the report's top page shows
        summary="results/tables/v2_headline_summary.csv",
        table=report(
            "results/tables/v2_headline.csv",
            caption="../report/v2_headline.rst",
            category="0. Headline",
            subcategory="AstroCLIP v2 table",
            labels={"table": "redshift, properties, morphology"},
        ),
    log:
        "results/logs/v2_headline_table.log",
    conda:
        "../../envs/astroclip.yaml"
    params:
        code=library_code("v2_headline_table.py"),
    script:
        "../scripts/v2_headline_table.py"
