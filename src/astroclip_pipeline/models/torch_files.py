"""Reading torch files (model files, checkpoints) with errors that name the file and the fix."""

from pathlib import Path

import torch


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu", weights_only: bool = True):
    """``torch.load(path, ...)``; a truncated or empty file raises an error that names it.

    torch reports a file cut short (an interrupted copy, a full disk) as "PytorchStreamReader failed
    reading zip archive", "OSError: [Errno 22] Invalid argument" (a seek past its end) or a bare
    EOFError, none naming the file. Other errors (a pickle the safe loader refuses, a missing
    file) pass unchanged.

    Raises:
        ValueError: ``path`` is empty or truncated.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, OSError) as err:
        if isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err):
            raise
        if isinstance(err, OSError) and err.filename is not None:
            raise  # a missing or unreadable file: the error names it already
        size = Path(path).stat().st_size
        raise ValueError(
            f"{path}: not a complete torch file ({size} bytes; {type(err).__name__}: {str(err)[:120] or 'empty'}). "
            "It was cut short (an interrupted copy, a full disk): copy it again, or remake it by "
            "rerunning the rule that writes it (snakemake --forcerun <rule>)."
        ) from err
