"""What every training benchmark repeats: timing optimizer steps after a warm-up, and peak memory."""

import resource
import time
import warnings
from collections.abc import Callable

import torch


def time_steps(step: Callable[[], None], steps: int, device: torch.device, warmup: int = 3) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory(device: torch.device) -> str:
    """Peak allocated GPU memory, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def host_syncs(step: Callable[[], None], device: torch.device) -> int | None:
    """How many times one call of ``step`` makes the host wait for the GPU (``.item()``, a boolean
    mask, a copy from pageable memory...), counted by PyTorch's CUDA sync debug mode and printed
    with the first few places; None (and nothing printed) on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    print(f"  {len(caught)} host syncs in one step")
    for warning in caught[:5]:
        print(f"    {str(warning.message).splitlines()[0]} ({warning.filename}:{warning.lineno})")
    return len(caught)
