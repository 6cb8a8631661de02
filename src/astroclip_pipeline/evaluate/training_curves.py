"""Loss curves and learning-rate schedule from a Lightning CSV metrics file (any training stage)."""

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import plt, save_figure


def read_metrics(path: str | Path) -> pd.DataFrame:
    metrics = pd.read_csv(path)
    if "step" not in metrics:
        raise KeyError(f"{path}: no 'step' column; expected a Lightning CSVLogger metrics.csv")
    return metrics


def plot_training_curves(metrics_path: str | Path, output_path: str | Path, title: str) -> None:
    """Training loss per step (and its running mean), validation loss per epoch, and the learning rate."""
    metrics = read_metrics(metrics_path)
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    steps = metrics.dropna(subset=["train_loss_step"]) if "train_loss_step" in metrics else metrics.iloc[:0]
    if len(steps):
        ax.plot(steps.step, steps.train_loss_step, color="tab:blue", alpha=0.3, lw=0.7, label="train (per step)")
        window = max(1, len(steps) // 30)
        ax.plot(steps.step, steps.train_loss_step.rolling(window, min_periods=1).mean(), color="tab:blue",
                label=f"train (running mean, {window} steps)")  # fmt: skip
    if "val_loss" in metrics:
        val = metrics.dropna(subset=["val_loss"])
        ax.plot(val.step, val.val_loss, "o-", color="tab:red", label="validation (per epoch)")
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    lr_columns = [c for c in metrics.columns if c.startswith("lr-")]
    if lr_columns:
        lr = metrics.dropna(subset=[lr_columns[0]])
        ax_lr.plot(lr.step, lr[lr_columns[0]], color="k", lw=1)
        ax_lr.set_ylim(0, np.nanmax(lr[lr_columns[0]]) * 1.1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    save_figure(fig, output_path)
