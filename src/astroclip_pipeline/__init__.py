"""AstroCLIP reproduced as a workflow: the library behind the Snakemake rules.

The package knows nothing of Snakemake: every stage is a plain function that takes paths
and values and can be called from Python, a notebook or a test.
"""

__version__ = "0.1.0"
