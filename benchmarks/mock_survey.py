"""Mock-survey generation rate: target selection, then spectra and cutouts shard by shard.

Runs the shards on a pool of worker processes, as Snakemake does with --cores N, and prints the
wall time of each stage and the overall rate. Usage:

    python benchmarks/mock_survey.py --galaxies 4000 --workers 2 --rebin 4 --size 64
"""

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_cutouts, write_spectra, write_targets


def _shard(spec: MockSurveySpec, root: Path, shard: int) -> None:
    write_spectra(spec, root / "galaxies.parquet", shard, root / f"s{shard}.h5", root / f"ms{shard}.csv")
    write_cutouts(spec, root / "galaxies.parquet", shard, root / f"c{shard}.h5", root / f"mc{shard}.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=4000)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rebin", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    spec = MockSurveySpec(
        seed=1, n_galaxies=args.galaxies, galaxies_per_shard=args.per_shard, rebin=args.rebin, image_size=args.size
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        n_shards = write_targets(spec, root / "targets.parquet", root / "galaxies.parquet")
        selected = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(_shard, [spec] * n_shards, [root] * n_shards, range(n_shards)))
        done = time.perf_counter()
    total = done - start
    print(f"{args.galaxies} galaxies, {n_shards} shards, {args.workers} workers, rebin {args.rebin}, {args.size} px")
    print(f"  target selection   {selected - start:6.1f} s")
    print(f"  spectra + cutouts  {done - selected:6.1f} s")
    print(f"  total              {total:6.1f} s  ({args.galaxies / total:.0f} galaxies/s)")


if __name__ == "__main__":
    main()
