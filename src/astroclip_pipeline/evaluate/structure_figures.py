"""Figures of the embedding space's structure: UMAPs coloured by property and by cluster, the
silhouette scan, and galleries of cutouts and spectra per cluster.

They read the tables of the structure rules (UMAP coordinates, cluster labels) and never fit
anything, so restyling a figure reruns no UMAP.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import plt, save_figure
from .overview import ABSORPTION_LINES, EMISSION_LINES
from .retrieval_figures import display_spectrum, draw_cutout
from .structure import (
    MODALITIES,
    check_aligned,
    dataset_attrs,
    load_heldout,
    read_heldout_rows,
    read_umap_table,
)

#: (column, label, colour map) of the properties the UMAPs are coloured by.
PROPERTIES = [("Z_HP", "redshift", "viridis"), ("LOGMSTAR", "log M* [M☉]", "plasma")]
NOISE_COLOUR = "0.8"


def _held_out_name(splits: Sequence[str]) -> str:
    return " + ".join(splits)


def _axes_off(ax: plt.Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1", fontsize=7)
    ax.set_ylabel("UMAP 2", fontsize=7)


def plot_umaps(
    umap_paths: dict[str, str | Path], embedding_paths: Sequence[str | Path], splits: Sequence[str], output: str | Path
) -> None:
    """UMAP of each modality (columns) coloured by each property (rows)."""
    embeddings = load_heldout(embedding_paths, splits)
    fig, axes = plt.subplots(len(PROPERTIES), len(MODALITIES), figsize=(4.2 * len(MODALITIES), 3.8 * len(PROPERTIES)),
                             squeeze=False)  # fmt: skip
    for col, modality in enumerate(MODALITIES):
        table = read_umap_table(umap_paths[modality])
        check_aligned(table, embeddings, umap_paths[modality])
        for row, (column, label, cmap) in enumerate(PROPERTIES):
            ax, values = axes[row, col], embeddings[column]
            low, high = np.nanpercentile(values, [1, 99])
            points = ax.scatter(table.UMAP_1, table.UMAP_2, c=values, s=5, cmap=cmap, vmin=low, vmax=high, lw=0)
            fig.colorbar(points, ax=ax, label=label, shrink=0.85)
            ax.set_title(f"{modality} embeddings", fontsize=9)
            _axes_off(ax)
    fig.suptitle(f"UMAP of the {len(table)} held-out galaxies ({_held_out_name(splits)})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, output)


def _cluster_colours(labels: np.ndarray) -> dict[int, tuple]:
    real = [label for label in np.unique(labels) if label >= 0]
    cmap = plt.get_cmap("tab10" if len(real) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(real)}


def _scatter_clusters(
    ax: plt.Axes, table: pd.DataFrame, labels: np.ndarray, colours: dict[int, tuple], legend: bool = True
) -> None:
    """Points coloured by cluster, noise in light grey. With ``legend`` False (too many clusters
    for a legend) each cluster's number is written at its median position instead."""
    noise = labels < 0
    if noise.any():
        ax.scatter(table.UMAP_1[noise], table.UMAP_2[noise], s=4, color=NOISE_COLOUR, lw=0,
                   label=f"noise ({noise.sum()})")  # fmt: skip
    for label, colour in colours.items():
        members = labels == label
        ax.scatter(table.UMAP_1[members], table.UMAP_2[members], s=6, color=colour, lw=0,
                   label=f"{label} ({members.sum()})" if legend else None)  # fmt: skip
        if not legend:
            ax.annotate(str(label), (table.UMAP_1[members].median(), table.UMAP_2[members].median()), fontsize=6,
                        ha="center", va="center", xytext=(0, 6), textcoords="offset points")  # fmt: skip
    _axes_off(ax)


def _best_match_note(truth_table: pd.DataFrame | None) -> str:
    if truth_table is None or not truth_table.best_match.any():
        return ""
    best = truth_table[truth_table.best_match].iloc[0]
    return (
        f"\nartefacts: cluster {best.cluster} has precision {best.precision:.2f} (base rate "
        f"{best.chance_precision:.3f}), recall {best.recall:.2f}"
    )


def plot_dbscan_umap(
    umap_path: str | Path,
    clusters_path: str | Path,
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    output: str | Path,
    truth_table_path: str | Path | None = None,
) -> None:
    """The image UMAP coloured by DBSCAN cluster; artefact cutouts ringed when the truth is known."""
    embeddings = load_heldout(embedding_paths, splits)
    table, clusters = read_umap_table(umap_path), pd.read_csv(clusters_path)
    check_aligned(table, embeddings, umap_path)
    check_aligned(clusters, embeddings, clusters_path)
    labels = clusters.CLUSTER.to_numpy()
    truth_table = pd.read_csv(truth_table_path) if truth_table_path else None
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    colours = _cluster_colours(labels)
    _scatter_clusters(ax, table, labels, colours, legend=len(colours) <= 10)
    if truth_table is not None and truth_table.best_match.any():
        best = labels == truth_table.cluster[truth_table.best_match].iloc[0]
        ax.scatter(table.UMAP_1[best], table.UMAP_2[best], s=90, color="tab:red", alpha=0.25, lw=0, zorder=0,
                   label="best match to the artefacts")  # fmt: skip
    if "TRUTH_ARTEFACT" in embeddings:
        flagged = embeddings["TRUTH_ARTEFACT"].astype(bool)
        ax.scatter(table.UMAP_1[flagged], table.UMAP_2[flagged], s=40, facecolors="none", edgecolors="k", lw=0.7,
                   label=f"artefact (truth, {flagged.sum()})")  # fmt: skip
    title = "cluster (members)" if len(colours) <= 10 else "clusters numbered on the plot"
    ax.legend(fontsize=6.5, loc="best", ncol=2, title=title, title_fontsize=7, markerscale=2)
    ax.set_title(
        f"DBSCAN on the image UMAP ({_held_out_name(splits)}): {labels.max() + 1} clusters, "
        f"{np.mean(labels < 0):.0%} noise" + _best_match_note(truth_table),
        fontsize=9,
    )
    save_figure(fig, output)


def _gallery_rows(
    labels: np.ndarray, per_cluster: int, max_clusters: int, seed: int, first: Sequence[int] = ()
) -> list[tuple[int, np.ndarray]]:
    """(cluster, member indices) for the clusters ``first`` and then the largest others (at most
    max_clusters in all), each with up to per_cluster random members."""
    rng = np.random.default_rng(seed)
    real, sizes = np.unique(labels[labels >= 0], return_counts=True)
    largest = [int(c) for c in real[np.argsort(-sizes, kind="stable")] if c not in first]
    chosen = list(first) + sorted(largest[: max(0, max_clusters - len(first))])
    rows = []
    for label in chosen:
        members = np.flatnonzero(labels == label)
        rows.append((int(label), np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False))))
    return rows


def plot_cluster_cutouts(
    clusters_path: str | Path,
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    dataset_paths: Sequence[str | Path],
    output: str | Path,
    title: str,
    per_cluster: int,
    max_clusters: int,
    seed: int,
    first: Sequence[int] = (),
) -> None:
    """A row of random cutouts per cluster: the clusters ``first``, then the largest others."""
    embeddings = load_heldout(embedding_paths, splits)
    clusters = pd.read_csv(clusters_path)
    check_aligned(clusters, embeddings, clusters_path)
    labels = clusters.CLUSTER.to_numpy()
    rows = _gallery_rows(labels, per_cluster, max_clusters, seed, first)
    if not rows:
        # Tiny or structureless sets (the ci preset) can leave every object noise: say so in the
        # figure rather than fail the workflow.
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no clusters, every one of the {len(labels)} objects is noise",
                ha="center", va="center", fontsize=9)  # fmt: skip
        save_figure(fig, output)
        return
    shown = np.concatenate([members for _, members in rows])
    datasets = dict(zip(splits, dataset_paths, strict=True))
    images = read_heldout_rows(datasets, embeddings["SPLIT"][shown], embeddings["ROW"][shown], ["image"])["image"]
    image_of = dict(zip(shown, images, strict=True))
    bands = str(dataset_attrs(dataset_paths[0])["bands"])
    kind = embeddings.get("TRUTH_ARTEFACT_KIND")
    n_cols = max(len(members) for _, members in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.25 * n_cols + 0.8, 1.4 * len(rows) + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, members) in enumerate(rows):
        for c, index in enumerate(members):
            ax = axes[r, c]
            ax.axis("on")
            text = f"z={embeddings['Z_HP'][index]:.2f}"
            flagged = kind is not None and kind[index] != "none"
            if flagged:
                text += f" [{kind[index]}]"
            draw_cutout(ax, image_of[index], bands, text, frame="red" if flagged else None)
        n_members = int(np.sum(labels == label))
        axes[r, 0].set_ylabel(f"cluster {label}\n({n_members})", fontsize=7, rotation=0, ha="right", va="center")
    suffix = " (red frame: artefact in the truth)" if kind is not None else ""
    fig.suptitle(f"{title}, {_held_out_name(splits)}: random members per cluster{suffix}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, output)


def plot_silhouette(silhouette_path: str | Path, output: str | Path) -> None:
    scan = pd.read_csv(silhouette_path)
    chosen = scan[scan.chosen].iloc[0]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(scan.k, scan.silhouette, "o-", color="k", ms=4)
    ax.plot(chosen.k, chosen.silhouette, "o", ms=11, mfc="none", mec="tab:red", mew=1.5,
            label=f"chosen k = {int(chosen.k)} (silhouette {chosen.silhouette:.3f})")  # fmt: skip
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("mean silhouette")
    ax.set_xticks(scan.k)
    ax.legend(fontsize=8)
    ax.set_title("k-means on the 128-d spectrum embeddings", fontsize=9)
    save_figure(fig, output)


def plot_kmeans_umaps(
    umap_paths: dict[str, str | Path],
    clusters_path: str | Path,
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    output: str | Path,
) -> None:
    """The spectrum and image UMAPs coloured by the k-means clusters of the spectrum embeddings."""
    embeddings = load_heldout(embedding_paths, splits)
    clusters = pd.read_csv(clusters_path)
    check_aligned(clusters, embeddings, clusters_path)
    labels = clusters.CLUSTER.to_numpy()
    colours = _cluster_colours(labels)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    for ax, modality in zip(axes, ("spectrum", "image"), strict=True):
        table = read_umap_table(umap_paths[modality])
        check_aligned(table, embeddings, umap_paths[modality])
        _scatter_clusters(ax, table, labels, colours)
        ax.set_title(f"{modality} UMAP", fontsize=9)
    axes[0].legend(fontsize=6.5, ncol=2, title="cluster (members)", title_fontsize=7, markerscale=2)
    fig.suptitle(
        f"k-means clusters (k = {len(colours)}) of the spectrum embeddings ({_held_out_name(splits)})", fontsize=10
    )
    fig.tight_layout()
    save_figure(fig, output)


def _mark_rest_lines(ax: plt.Axes, low: float, high: float) -> None:
    for lines, colour in ((EMISSION_LINES, "tab:blue"), (ABSORPTION_LINES, "tab:red")):
        for rest in lines.values():
            if low < rest < high:
                ax.axvline(rest, color=colour, lw=0.5, alpha=0.4, ls="--")


def plot_cluster_spectra(
    clusters_path: str | Path,
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    dataset_paths: Sequence[str | Path],
    output: str | Path,
    per_cluster: int,
    max_clusters: int,
    seed: int,
) -> None:
    """Per cluster, random members' spectra in the rest frame, stacked with offsets."""
    embeddings = load_heldout(embedding_paths, splits)
    clusters = pd.read_csv(clusters_path)
    check_aligned(clusters, embeddings, clusters_path)
    labels = clusters.CLUSTER.to_numpy()
    rows = _gallery_rows(labels, per_cluster, max_clusters, seed)
    shown = np.concatenate([members for _, members in rows])
    datasets = dict(zip(splits, dataset_paths, strict=True))
    data = read_heldout_rows(datasets, embeddings["SPLIT"][shown], embeddings["ROW"][shown], ["spectrum", "ivar"])
    at = {index: i for i, index in enumerate(shown)}
    wavelength = dataset_attrs(dataset_paths[0])["wavelength"]
    z = embeddings["Z_HP"]
    n_cols = 2 if len(rows) > 3 else 1
    n_rows = int(np.ceil(len(rows) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(7 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    for ax, (label, members) in zip(axes.flat, rows, strict=False):
        for offset, index in enumerate(members):
            rest = wavelength / (1 + z[index])
            ax.plot(rest, display_spectrum(data["spectrum"][at[index]], data["ivar"][at[index]]) + 1.5 * offset, lw=0.5)
        member_z = z[labels == label]
        ax.set_title(f"cluster {label}: {len(member_z)} members, z = {np.median(member_z):.3f} "
                     f"(16-84%: {np.percentile(member_z, 16):.3f}-{np.percentile(member_z, 84):.3f})",
                     fontsize=8, loc="left")  # fmt: skip
        ax.set_yticks([])
        _mark_rest_lines(ax, *ax.get_xlim())
    for ax in axes[-1]:
        ax.set_xlabel("rest-frame wavelength [Å]")
    fig.suptitle(
        "Spectra of random members of each k-means cluster (flux / median, offset, smoothed); "
        "dashed: emission (blue) and absorption (red) lines",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, output)
