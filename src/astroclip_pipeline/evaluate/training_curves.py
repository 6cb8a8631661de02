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


def _running_mean(ax, steps: pd.DataFrame, column: str, color: str, label: str) -> None:
    window = max(1, len(steps) // 30)
    ax.plot(steps.step, steps[column], color=color, alpha=0.25, lw=0.7)
    ax.plot(steps.step, steps[column].rolling(window, min_periods=1).mean(), color=color, label=label)


def plot_dino_curves(metrics_path: str | Path, output_path: str | Path) -> None:
    """DINOv2 pretraining (``train/dino.py``): the DINO, iBOT and KoLeo losses per step (running
    means over a thirtieth of the run) with the validation loss; the learning rate of the top
    layer and the weight decay; the teacher's temperature and momentum."""
    metrics = read_metrics(metrics_path)
    needed = ["train_dino_step", "train_ibot_step", "train_koleo_step", "teacher_temp", "teacher_momentum"]
    absent = [c for c in needed if c not in metrics]
    if absent:
        raise KeyError(f"{metrics_path}: no column(s) {absent}; expected the metrics of pretrain_dino")
    fig, (ax, ax_lr, ax_teacher) = plt.subplots(3, 1, figsize=(8, 8), sharex=True, height_ratios=[3, 1.2, 1.2])
    steps = metrics.dropna(subset=["train_dino_step"])
    _running_mean(ax, steps, "train_dino_step", "tab:blue", "DINO (CLS tokens)")
    _running_mean(ax, steps, "train_ibot_step", "tab:green", "iBOT (masked patches)")
    _running_mean(ax, steps, "train_koleo_step", "tab:purple", "KoLeo (x 1, before its weight)")
    val = metrics.dropna(subset=["val_dino"]) if "val_dino" in metrics else metrics.iloc[:0]
    ax.plot(val.step, val.val_dino, "o", color="tab:blue", label="DINO, validation (per epoch)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("pretrain_dino: losses, learning rate and teacher schedules", fontsize=10)
    # the top layer's rate: the highest of the layer-wise decayed ones
    lr_columns = [c for c in metrics.columns if c.startswith("lr-") and "prototypes" not in c]
    if lr_columns:
        top = max(lr_columns, key=lambda c: np.nanmax(metrics[c]))
        lr = metrics.dropna(subset=[top])
        ax_lr.plot(lr.step, lr[top], color="k", lw=1, label="learning rate (top layer)")
        ax_lr.set_ylabel("learning rate")
    if "weight_decay" in metrics:
        wd = metrics.dropna(subset=["weight_decay"])
        ax_wd = ax_lr.twinx()
        ax_wd.plot(wd.step, wd.weight_decay, color="tab:orange", lw=1)
        ax_wd.set_ylabel("weight decay", color="tab:orange")
    teacher = metrics.dropna(subset=["teacher_temp"])
    ax_teacher.plot(teacher.step, teacher.teacher_temp, color="tab:red", lw=1)
    ax_teacher.set_ylabel("teacher temperature", color="tab:red")
    ax_m = ax_teacher.twinx()
    ax_m.plot(teacher.step, teacher.teacher_momentum, color="tab:cyan", lw=1)
    ax_m.set_ylabel("teacher momentum", color="tab:cyan")
    ax_teacher.set_xlabel("optimizer step")
    fig.tight_layout()
    save_figure(fig, output_path)
