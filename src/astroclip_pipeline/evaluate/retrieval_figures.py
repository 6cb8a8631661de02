"""Retrieval figures: the nearest neighbours of query galaxies in the shared embedding space.

Neighbours are ranked by cosine similarity, a dot product of the L2-normalised embeddings. In
same-modality retrieval (image -> image, spectrum -> spectrum) the query itself is left out of the
candidates, since it is trivially its own best match; in cross-modal retrieval it stays in, and its
own partner (its image for a spectrum query, and the other way round) is framed when it comes back.
"""

from pathlib import Path

import numpy as np

from .embeddings import read_embeddings
from .figures import plt, save_figure
from .rgb import legacysurvey_rgb
from .structure import clipped, dataset_attrs, read_dataset_rows

#: (title, query embedding, candidate embedding, leave the query out) for the paper's four pairs.
PAIRS = [
    ("image → image", "image_embedding", "image_embedding", True),
    ("spectrum → spectrum", "spectrum_embedding", "spectrum_embedding", True),
    ("spectrum → image", "spectrum_embedding", "image_embedding", False),
    ("image → spectrum", "image_embedding", "spectrum_embedding", False),
]
#: Display only: spectra are smoothed by a running mean of this many pixels so lines stand out.
SMOOTH_PIXELS = 7
#: Vertical step between stacked spectra (in units of the median flux).
SPECTRUM_OFFSET = 1.6
PARTNER_COLOUR = "limegreen"


def top_k_neighbours(
    queries: np.ndarray, candidates: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities (q, k) of each query's k most similar candidates, best first.

    ``exclude[i]`` is a candidate index that query i may not retrieve (itself), or None for none.
    Rows are assumed L2-normalised; ties keep the lower candidate index first.
    """
    similarity = np.asarray(queries, dtype=np.float64) @ np.asarray(candidates, dtype=np.float64).T
    if exclude is not None:
        similarity[np.arange(len(similarity)), exclude] = -np.inf
    k = min(k, candidates.shape[0] - (exclude is not None))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def random_queries(n_objects: int, n_queries: int, seed: int) -> np.ndarray:
    n_queries = clipped("structure.retrieval_queries", n_queries, 1, n_objects)
    return np.sort(np.random.default_rng(seed).choice(n_objects, size=n_queries, replace=False))


def pair_neighbours(embeddings: dict, queries: np.ndarray, top_k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each of the four pairs, the neighbours (indices, similarities) of the query rows."""
    top_k = clipped("structure.top_k", top_k, 1, len(embeddings["TARGETID"]) - 1)
    result = {}
    for title, query_key, candidate_key, leave_out in PAIRS:
        result[title] = top_k_neighbours(
            embeddings[query_key][queries], embeddings[candidate_key], top_k, exclude=queries if leave_out else None
        )
    return result


def draw_cutout(ax: plt.Axes, image: np.ndarray, bands: str, title: str, frame: str | None = None) -> None:
    ax.imshow(legacysurvey_rgb(image, bands), origin="lower")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=6, pad=2)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(2.5)


def plot_retrieval_examples(
    embeddings_path: str | Path, dataset_path: str | Path, output: str | Path, n_queries: int, top_k: int, seed: int
) -> None:
    """The paper's retrieval figure: for random queries, the top-k neighbours in each of the four
    pairs, every galaxy shown as its cutout (a spectrum is represented by its galaxy's cutout)."""
    embeddings = read_embeddings(embeddings_path)
    queries = random_queries(len(embeddings["TARGETID"]), n_queries, seed)
    neighbours = pair_neighbours(embeddings, queries, top_k)
    shown = np.unique(np.concatenate([queries, *(idx.ravel() for idx, _ in neighbours.values())]))
    images = dict(zip(shown, read_dataset_rows(dataset_path, shown, ["image"])["image"], strict=True))
    bands, z = str(dataset_attrs(dataset_path)["bands"]), embeddings["Z_HP"]
    k = next(iter(neighbours.values()))[0].shape[1]

    fig = plt.figure(figsize=(2 * (1 + k) * 1.1, 2 * len(queries) * 1.35 + 0.6))
    blocks = fig.subfigures(2, 2, wspace=0.04, hspace=0.04)
    for block, (title, _, _, leave_out) in zip(blocks.flat, PAIRS, strict=True):
        indices, similarities = neighbours[title]
        axes = block.subplots(len(queries), 1 + k, squeeze=False)
        block.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.06, hspace=0.45)
        block.suptitle(title, fontsize=10, fontweight="bold")
        for row, query in enumerate(queries):
            draw_cutout(axes[row, 0], images[query], bands, f"query z={z[query]:.3f}", frame="black")
            for col, (index, similarity) in enumerate(zip(indices[row], similarities[row], strict=True)):
                partner = not leave_out and index == query
                label = f"#{col + 1} cos={similarity:.2f}\nz={z[index]:.3f}"
                draw_cutout(axes[row, col + 1], images[index], bands, label, frame=PARTNER_COLOUR if partner else None)
    fig.suptitle(
        f"Top-{k} neighbours of {len(queries)} random test galaxies by cosine similarity "
        f"(green frame: the query's own partner)",
        fontsize=10,
        y=1.01,
    )
    save_figure(fig, output)


def display_spectrum(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Flux over its median, smoothed for display, with masked pixels left out (NaN)."""
    good = ivar > 0
    scale = np.median(flux[good]) if good.any() else 1.0
    scale = scale if scale > 0 else np.median(np.abs(flux[good])) + 1e-12
    kernel = np.ones(SMOOTH_PIXELS) / SMOOTH_PIXELS
    weight = np.convolve(good.astype(float), kernel, mode="same")
    smooth = np.convolve(np.where(good, flux, 0.0), kernel, mode="same") / np.where(weight > 0, weight, 1.0)
    return np.where(weight > 0.5, smooth / scale, np.nan)


def plot_spectral_retrieval(
    embeddings_path: str | Path, dataset_path: str | Path, output: str | Path, n_queries: int, top_k: int, seed: int
) -> None:
    """Papers' spectral retrieval: a query galaxy's spectrum with the spectra of its top-k neighbours
    retrieved by its image embedding (image -> spectrum) and by its spectrum embedding
    (spectrum -> spectrum); the query itself is left out of both, so every curve is another galaxy."""
    embeddings = read_embeddings(embeddings_path)
    n = len(embeddings["TARGETID"])
    # Another stream than the retrieval examples' (seed + 1) so that the two figures show other galaxies.
    queries = random_queries(n, n_queries, seed + 1)
    top_k = clipped("structure.top_k", top_k, 1, n - 1)
    modes = [("image query → spectra", "image_embedding"), ("spectrum query → spectra", "spectrum_embedding")]
    found = {
        title: top_k_neighbours(embeddings[key][queries], embeddings["spectrum_embedding"], top_k, exclude=queries)
        for title, key in modes
    }
    shown = np.unique(np.concatenate([queries, *(idx.ravel() for idx, _ in found.values())]))
    data = read_dataset_rows(dataset_path, shown, ["spectrum", "ivar", "image"])
    at = {row: i for i, row in enumerate(shown)}
    attrs = dataset_attrs(dataset_path)
    wavelength, bands, z = attrs["wavelength"], str(attrs["bands"]), embeddings["Z_HP"]
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, top_k))

    # Stacked, not overlaid: the spectra are noisy, so each neighbour gets its own offset, with the
    # query drawn again in grey behind it for a line-by-line comparison.
    fig, axes = plt.subplots(len(queries), 2, figsize=(14, (1.2 + 0.75 * top_k) * len(queries)), squeeze=False,
                             sharex=True)  # fmt: skip
    for row, query in enumerate(queries):
        query_flux = display_spectrum(data["spectrum"][at[query]], data["ivar"][at[query]])
        for col, (title, _) in enumerate(modes):
            ax = axes[row, col]
            ax.plot(wavelength, query_flux, lw=0.8, color="k")
            ax.text(wavelength[-1], 1.0, f" query\n z={z[query]:.3f}", fontsize=7, va="center")
            indices, similarities = found[title]
            for rank, (index, similarity) in enumerate(zip(indices[row], similarities[row], strict=True)):
                offset = -SPECTRUM_OFFSET * (rank + 1)
                flux = display_spectrum(data["spectrum"][at[index]], data["ivar"][at[index]])
                ax.plot(wavelength, query_flux + offset, lw=0.6, color="0.75")
                ax.plot(wavelength, flux + offset, lw=0.6, color=colours[rank])
                ax.text(wavelength[-1], 1.0 + offset, f" #{rank + 1} z={z[index]:.3f}\n cos={similarity:.2f}",
                        fontsize=7, va="center", color=colours[rank])  # fmt: skip
            ax.set_title(f"{title}: TARGETID {embeddings['TARGETID'][query]}", fontsize=9, loc="left")
            ax.set_ylim(-SPECTRUM_OFFSET * (top_k + 0.5), 2.6)
            ax.set_yticks([])
        inset = axes[row, 0].inset_axes([0.005, 1 - 0.9 / (top_k + 1.5), 0.1, 0.9 / (top_k + 1.5)])
        draw_cutout(inset, data["image"][at[query]], bands, "")
    for ax in axes[-1]:
        ax.set_xlabel("observed wavelength [Å]")
    fig.suptitle(
        f"Spectral retrieval on the test split: the query's spectrum (black, top; inset: its cutout) and the "
        f"spectra of its top {top_k} neighbours (colour; the query again in grey behind each); flux / median, "
        f"offset, smoothed over {SMOOTH_PIXELS} pixels",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, output)
