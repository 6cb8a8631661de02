"""Time per query of the exact similarity search for N galaxies of d-dimensional embeddings.

Random unit vectors are the right workload for brute force (the search does the same arithmetic
whatever the vectors hold). Usage:

    python benchmarks/similarity_search.py --n 20000 200000 --dim 128 1024
"""

import argparse
import time

import numpy as np

from astroclip_pipeline.evaluate.search import top_k


def unit_vectors(rng, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--dim", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50, help="single queries timed one after another")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for d in args.dim:
        for n in args.n:
            candidates = unit_vectors(rng, n, d)
            queries = unit_vectors(rng, args.queries, d)
            top_k(queries[:1], candidates, args.k)  # warm-up: BLAS threads, page faults
            start = time.perf_counter()
            for query in queries:  # one at a time, as a user or the command asks
                top_k(query, candidates, args.k)
            single = (time.perf_counter() - start) / args.queries
            start = time.perf_counter()
            top_k(queries, candidates, args.k)  # a batch, as the explorer's precomputation would
            batched = (time.perf_counter() - start) / args.queries
            print(f"n={n:>7,} d={d:>4} k={args.k}: {1e3 * single:7.2f} ms/query single, {1e3 * batched:7.2f} batched")


if __name__ == "__main__":
    main()
