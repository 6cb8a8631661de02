"""Figures of the morphology classification: scores per question, confusion matrices, the surest galaxies."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import open_hdf5
from ..sources.galaxy_zoo import QUESTIONS
from .figures import plt, save_figure
from .morphology import PUBLISHED_ACCURACY
from .retrieval_figures import draw_cutout

#: The feature set whose confusions and surest galaxies are shown.
SHOWN_FEATURES = "AstroCLIP image embedding"


def plot_morphology_scores(metrics_path: str | Path, output: str | Path) -> None:
    """Accuracy and weighted F1 per question and feature set; the majority-answer rate as a black
    tick, the published mean accuracy (v2, on DESI) as dashed lines."""
    metrics = pd.read_csv(metrics_path)
    names = list(dict.fromkeys(metrics["features"]))
    questions = [q for q in QUESTIONS if q in set(metrics["question"])]
    width = 0.8 / len(names)
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, column, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "weighted_f1", "weighted F1")):
        for i, name in enumerate(names):
            rows = metrics[metrics["features"] == name].set_index("question").reindex(questions)
            x = np.arange(len(questions)) + (i - (len(names) - 1) / 2) * width
            bars = ax.bar(x, rows[column], width, label=f"{name} (mean {rows[column].mean():.2f})")
            if column == "accuracy":
                ax.scatter(x, rows["majority_rate"], marker="_", color="k", s=60, zorder=3,
                           label="majority-answer rate" if i == 0 else None)  # fmt: skip
                if name in PUBLISHED_ACCURACY:
                    ax.axhline(PUBLISHED_ACCURACY[name], ls="--", lw=1, color=bars.patches[0].get_facecolor(),
                               label=f"published mean, {name} (v2, DESI)")  # fmt: skip
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n_test = metrics.groupby("question")["n_test"].max().reindex(questions)
    axes[1].set_xticks(np.arange(len(questions)), [f"{q}\n(n={n})" for q, n in n_test.items()], rotation=30,
                       ha="right", fontsize=7)  # fmt: skip
    fig.suptitle("Galaxy Zoo DECaLS questions: classifiers on each feature set (test galaxies)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, output)


def plot_confusion_matrices(predictions_path: str | Path, output: str | Path) -> None:
    """Per question, the share of test galaxies with each most-voted answer (rows) given each
    predicted answer (columns), for the AstroCLIP image embedding."""
    predictions = pd.read_parquet(predictions_path)
    shown = predictions[predictions["features"] == SHOWN_FEATURES]
    questions = [q for q in QUESTIONS if q in set(shown["question"])]
    n_cols = 5
    n_rows = max(1, int(np.ceil(len(questions) / n_cols)))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, question in zip(axes.flat, questions, strict=False):
        ax.axis("on")
        answers = list(QUESTIONS[question])
        group = shown[shown["question"] == question]
        counts = pd.crosstab(group["true"], group["predicted"]).reindex(index=answers, columns=answers, fill_value=0)
        share = counts.to_numpy() / np.maximum(counts.to_numpy().sum(axis=1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (r, c), value in np.ndenumerate(counts.to_numpy()):
            ax.text(c, r, str(value), ha="center", va="center", fontsize=6, color="k" if share[r, c] < 0.6 else "w")
        ax.set_xticks(range(len(answers)), answers, rotation=45, ha="right", fontsize=6)
        ax.set_yticks(range(len(answers)), answers, fontsize=6)
        ax.set_title(f"{question} (n={len(group)})", fontsize=8)
    fig.supxlabel("predicted answer", fontsize=9)
    fig.supylabel("most-voted answer", fontsize=9)
    fig.suptitle(f"Confusion matrices, {SHOWN_FEATURES} (counts; colour = row share)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, output)


def plot_surest_galaxies(
    predictions_path: str | Path, dataset_paths: Sequence[str | Path], output: str | Path, per_answer: int
) -> None:
    """For each answer, the test galaxies the AstroCLIP-image classifier gives it the highest
    probability, titled with that probability and the volunteers' most-voted answer."""
    predictions = pd.read_parquet(predictions_path)
    shown = predictions[predictions["features"] == SHOWN_FEATURES]
    picks = []
    for question, answers in QUESTIONS.items():
        group = shown[shown["question"] == question]
        for answer in answers:
            if len(group):
                best = group.nlargest(per_answer, f"p_{answer}")
                picks.append((f"{question}:\n{answer}", best, f"p_{answer}"))
    images, bands = {}, "grz"
    wanted = set(np.concatenate([p[1]["TARGETID"].to_numpy() for p in picks])) if picks else set()
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            ids = h5["TARGETID"][()]
            rows = np.flatnonzero(np.isin(ids, list(wanted)))
            for row, image in zip(rows, h5["image"][rows] if len(rows) else [], strict=True):
                images[int(ids[row])] = image
            bands = str(h5.attrs["bands"])
    fig, axes = plt.subplots(max(1, len(picks)), per_answer + 1, figsize=(1.3 * (per_answer + 1), 1.35 * len(picks)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for (label, best, column), row in zip(picks, axes, strict=False):
        row[0].text(1.0, 0.5, label, ha="right", va="center", fontsize=6.5, transform=row[0].transAxes)
        for ax, (_, galaxy) in zip(row[1:], best.iterrows(), strict=False):
            ax.axis("on")
            draw_cutout(ax, images[int(galaxy["TARGETID"])], bands, f"p={galaxy[column]:.2f} ({galaxy['true']})")
    fig.suptitle(f"Surest test galaxies per answer, {SHOWN_FEATURES} (in brackets: the volunteers' answer)",
                 fontsize=8)  # fmt: skip
    save_figure(fig, output)
