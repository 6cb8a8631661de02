"""Evaluation time for N held-out galaxies, stage by stage, on synthetic embeddings.

The embeddings are random but structured like real ones (unit 128-d vectors that carry redshift
and mass, plus noise), so every stage does its real amount of work: the k-NN and MLP property
predictions (paper Table 1), the retrieval ranks, UMAP of the three modalities, DBSCAN on the
image map, and the k-means silhouette scan over k = 2..15; with ``--v2``, only what AstroCLIP v2's
evaluation adds: the v2-protocol property predictions and the Galaxy Zoo classifiers (10
questions x 3 feature sets, on simulated votes whose fractions follow the embeddings). Usage:

    python benchmarks/evaluation.py --n 30000 [--v2]
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch

from astroclip_pipeline.evaluate.morphology import MorphologyProtocol, classify_morphology, morphology_features
from astroclip_pipeline.evaluate.property_prediction import MAGNITUDES, TARGETS, predict_properties
from astroclip_pipeline.evaluate.retrieval import retrieval_table
from astroclip_pipeline.evaluate.structure import dbscan_labels, silhouette_scan, umap_projection
from astroclip_pipeline.sources.galaxy_zoo import QUESTIONS, answer_columns, total_column


def synthetic(n: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    properties = {t: rng.normal(size=n) for t in TARGETS}
    signal = np.stack([properties[t] for t in TARGETS], axis=1) @ rng.normal(size=(len(TARGETS), 128))

    def embedding(noise):
        x = signal + noise * rng.normal(size=(n, 128))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    embeddings = {"TARGETID": np.arange(n), "image_embedding": embedding(3.0), "spectrum_embedding": embedding(1.0)}
    embeddings |= properties | {m: rng.normal(19, 1, n) for m in MAGNITUDES}
    backbone = {"TARGETID": np.arange(n), "image": embedding(4.0), "spectrum": embedding(2.0)}
    return embeddings, backbone


def synthetic_labels(embeddings: dict, seed: int = 0) -> pd.DataFrame:
    """Matched Galaxy Zoo labels with 40 votes per question and fractions that follow the embedding."""
    rng = np.random.default_rng(seed)
    n = len(embeddings["TARGETID"])
    labels = {"matched": np.ones(n, bool)}
    for question, answers in QUESTIONS.items():
        logits = embeddings["image_embedding"] @ rng.normal(size=(128, len(answers))) * 5
        fractions = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels[total_column(question)] = np.full(n, 40.0)
        labels |= dict(zip(answer_columns(question, "_debiased"), fractions.T, strict=True))
    return pd.DataFrame(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--v2", action="store_true", help="only the stages AstroCLIP v2's evaluation adds")
    args = parser.parse_args()
    embeddings, backbone = synthetic(args.n)
    image, spectrum = embeddings["image_embedding"], embeddings["spectrum_embedding"]
    if args.v2:
        torch.set_num_threads(1)  # as the workflow's rule runs it
        labels = synthetic_labels(embeddings)
        features = morphology_features(embeddings, backbone)
        stages = {
            "property predictions, v2 protocol (9 methods x 5 targets)": lambda: predict_properties(
                embeddings, backbone, protocols=("v2",)
            ),
            "morphology classifiers (10 questions x 3 feature sets)": lambda: classify_morphology(
                features, labels, embeddings["TARGETID"], MorphologyProtocol()
            ),
        }
        for name, stage in stages.items():
            start = time.perf_counter()
            stage()
            print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
        return
    stages = {
        "property predictions (9 methods x 5 targets)": lambda: predict_properties(embeddings, backbone),
        "retrieval ranks (both directions)": lambda: retrieval_table(image, spectrum),
        "UMAP image": lambda: umap_projection(image, 15, 0.1, 0),
        "UMAP spectrum": lambda: umap_projection(spectrum, 15, 0.1, 0),
        "UMAP combined": lambda: umap_projection(np.hstack([image, spectrum]), 15, 0.1, 0),
        "k-means silhouette scan (k = 2..15)": lambda: silhouette_scan(spectrum, 2, 15, 0),
    }
    results = {}
    total = 0.0
    print(f"{args.n} galaxies")
    for name, stage in stages.items():
        start = time.perf_counter()
        results[name] = stage()
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"  {name}: {elapsed:.1f} s", flush=True)
    start = time.perf_counter()
    dbscan_labels(results["UMAP image"], 0.2, 5)
    elapsed = time.perf_counter() - start
    print(f"  DBSCAN on the image UMAP: {elapsed:.1f} s")
    print(f"  total: {total + elapsed:.1f} s")


if __name__ == "__main__":
    main()
