# AstroCLIP reproduced as a workflow. See README.md for how to run it and DESIGN.md for its map.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# The rule scripts import the library from src/ even where it is not installed (a conda
# environment made by --sdm conda, a cluster node): jobs inherit this environment variable.
_pythonpath = [os.path.join(workflow.basedir, "src"), os.environ.get("PYTHONPATH", "")]
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in _pythonpath if p))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/desi.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/structure.smk"
include: "workflow/rules/explorer.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/morphology.smk"
include: "workflow/rules/headline.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
