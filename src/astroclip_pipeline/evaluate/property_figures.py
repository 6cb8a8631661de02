"""Predicted-vs-true figures of the property predictions: one figure per method, a panel per target."""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from sklearn.metrics import r2_score

from .figures import plt, save_figure

LABELS = {
    "Z_HP": "redshift",
    "LOGMSTAR": "log M* / Msun",
    "SSFR": "log sSFR / yr⁻¹",
    "AGE": "mass-weighted age / Gyr",
    "Z_MW": "mass-weighted metallicity",
}


def _density_panel(ax, true: np.ndarray, predicted: np.ndarray, label: str) -> None:
    low, high = np.percentile(np.concatenate([true, predicted]), [0.5, 99.5])
    pad = 0.05 * (high - low)
    edges = np.linspace(low - pad, high + pad, 41)
    counts, _, _ = np.histogram2d(true, predicted, bins=[edges, edges])
    ax.imshow(counts.T, origin="lower", extent=(edges[0], edges[-1], edges[0], edges[-1]), cmap="Blues",
              aspect="auto", interpolation="nearest")  # fmt: skip
    # Contours of the smoothed density enclosing the densest 39% and 86% of galaxies (1σ, 2σ in 2-D).
    smooth = gaussian_filter(counts, 1.5).T
    levels = _enclosing_levels(smooth, (0.86, 0.39))
    centres = 0.5 * (edges[1:] + edges[:-1])
    if len(set(levels)) == len(levels) and smooth.max() > 0:
        ax.contour(centres, centres, smooth, levels=levels, colors="navy", linewidths=0.8)
    ax.plot(edges[[0, -1]], edges[[0, -1]], "r--", lw=1, label="y = x")
    ax.text(0.04, 0.95, f"R² = {r2_score(true, predicted):.3f}\nn = {len(true)}", transform=ax.transAxes,
            va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})  # fmt: skip
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")


def _enclosing_levels(density: np.ndarray, fractions) -> list[float]:
    """Density thresholds above which the given fractions of the total lie (increasing order)."""
    values = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(values) / max(values.sum(), 1e-12)
    return [float(values[min(np.searchsorted(cumulative, f), len(values) - 1)]) for f in fractions]


def plot_predicted_vs_true(predictions: pd.DataFrame, method: str, output: str | Path) -> None:
    rows = predictions[predictions.method == method]
    if rows.empty:
        raise KeyError(f"no predictions for method {method!r}; methods are {sorted(predictions.method.unique())}")
    targets = list(dict.fromkeys(rows.target))
    fig, axes = plt.subplots(1, len(targets), figsize=(3.4 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        group = rows[rows.target == target]
        _density_panel(ax, group["true"].to_numpy(), group["predicted"].to_numpy(), LABELS.get(target, target))
    fig.suptitle(method, fontsize=11)
    fig.tight_layout()
    save_figure(fig, output)
