"""Which devices a job may run on: a GPU asked for in the config is a GPU used.

Kept free of Lightning, so that the rules that only run a trained model (``embed``) check their
GPU as the training rules do without importing the training stack.
"""

import logging
import os
import warnings

import torch

log = logging.getLogger(__name__)


def cuda_report() -> str:
    """What CUDA reports on this node, in words: the torch build, device count, visible devices, and
    any warning that ``torch.cuda.is_available()`` gave (a driver too old, no driver...)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    report = (
        f"torch {torch.__version__} built with CUDA {torch.version.cuda or 'none (a CPU-only build)'}, "
        f"torch.cuda.is_available() = {available}, {count} device(s) visible, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
    )
    return "; ".join([report, *(str(w.message).strip() for w in caught)])


def require_gpus(gpus: int, stage: str, cpu_fallback: bool = False, rule: str | None = None) -> None:
    """Stop at once unless ``gpus`` CUDA devices are visible (``gpus`` = 0 asks for none).

    ``stage`` is the config block that asked, e.g. ``"align"``, and ``rule`` the rule (default: the
    same name; the ``embed`` rule runs on ``align.gpus``). Running a model meant for a GPU on the
    CPU takes hours before anyone notices, so a missing GPU is an error; with ``cpu_fallback``
    (config key ``allow_cpu_fallback``: a test cluster's stand-in GPU) it is a warning.

    Raises:
        RuntimeError: naming the rule, the config key and what CUDA reports.
    """
    rule = rule or stage
    if gpus <= 0:
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible >= gpus:
        return
    report = cuda_report()
    if cpu_fallback and visible == 0:
        log.warning("%s: %d GPU(s) asked for, none visible (%s); running on the CPU (allow_cpu_fallback)",
                    rule, gpus, report)  # fmt: skip
        return
    raise RuntimeError(
        f"rule {rule}: config key '{stage}.gpus' asks for {gpus} GPU(s), but CUDA sees {visible}: {report}. "
        f"Run it on a node with {gpus} GPU(s) (check the job's --gpus/--gres and CUDA_VISIBLE_DEVICES), "
        f"set '{stage}.gpus: {visible}', or set 'allow_cpu_fallback: true' to run on the CPU anyway."
    )
