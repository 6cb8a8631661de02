"""Send a process's logging, warnings and progress bars to a log file."""

import logging
import sys
from pathlib import Path


def log_to_file(path: str | Path) -> None:
    """Route logging and stderr (where tqdm draws its progress bars) to ``path``.

    The workflow's rule scripts call this first, so each job's log holds everything it said.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
