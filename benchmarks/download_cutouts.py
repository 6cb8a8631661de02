"""Cutout download rate against the loopback cutout service, and the CPU cost per cutout.

The loopback server (tests/loopback.py) answers like the Legacy Survey cutout service, after
``--latency`` seconds per request to stand in for the network and the service's own work. The
rate is measured for one shard at each concurrency; the CPU cost of validating one answer
(FITS parse, shape, finiteness) and of writing it (sidecar .npy, then its share of the shard
HDF5) is measured apart from the network. Usage:

    python benchmarks/download_cutouts.py --targets 200 --latency 0.05 --size 152
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.loopback

from astroclip_pipeline.files import atomic_path  # noqa: E402
from astroclip_pipeline.sources.http import Fetcher, RetryPolicy  # noqa: E402
from astroclip_pipeline.sources.legacysurvey import CutoutSpec, download_cutout_shard, read_cutout_fits  # noqa: E402
from astroclip_pipeline.sources.shards import CutoutShard, write_cutout_shard  # noqa: E402
from tests.loopback import LoopbackServer, cutout_fits_bytes  # noqa: E402


def targets(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"TARGETID": np.arange(n, dtype=np.int64), "RA": np.linspace(150, 160, n), "DEC": 2.0, "SHARD": 0}
    )


def download_rate(n: int, size: int, latency: float, workers: int) -> float:
    with LoopbackServer(latency=latency) as server, tempfile.TemporaryDirectory() as out:
        fetcher = Fetcher(max_workers=workers, requests_per_second=None, retry=RetryPolicy(backoff_base=0.01))
        start = time.perf_counter()
        download_cutout_shard(
            targets(n), 0, out, fetcher, CutoutSpec(size=size, service=server.cutout_service), progress=False
        )
        return n / (time.perf_counter() - start)


def cpu_cost(n: int, size: int) -> tuple[float, float]:
    """CPU seconds per cutout to validate an answer, and to write it (sidecar + shard share)."""
    bodies = [cutout_fits_bytes(150 + i * 0.01, 2.0, "grz", size) for i in range(n)]
    start = time.process_time()
    images = [read_cutout_fits(body, "grz", size) for body in bodies]
    validate = (time.process_time() - start) / n
    with tempfile.TemporaryDirectory() as out:
        start = time.process_time()
        for i, image in enumerate(images):
            with atomic_path(Path(out) / f"{i}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, image)
        shard = CutoutShard(np.arange(n, dtype=np.int64), np.stack(images), "grz", 0.262)
        write_cutout_shard(Path(out) / "shard.h5", shard, "benchmark")
        write = (time.process_time() - start) / n
    return validate, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--size", type=int, default=152)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake service takes per request")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    print(f"{args.targets} cutouts of {args.size}x{args.size} grz, service latency {args.latency * 1000:.0f} ms")
    for workers in args.workers:
        rate = download_rate(args.targets, args.size, args.latency, workers)
        print(f"  concurrency {workers:2d}: {rate:7.1f} cutouts/s")
    validate, write = cpu_cost(args.targets, args.size)
    print(f"  CPU per cutout: validate {validate * 1000:.2f} ms, write {write * 1000:.2f} ms")


if __name__ == "__main__":
    main()
