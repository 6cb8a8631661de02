"""The supervised baselines of the AstroCLIP v2 table: networks trained on the properties themselves.

Two networks, each one regression of the five properties at once (``property_prediction.TARGETS``
present in the dataset: Z_HP, LOGMSTAR, SSFR, AGE, Z_MW), z-scored with the training galaxies'
mean and standard deviation, mean squared error over the known values:

- "resnet18": a ResNet18 (``models.resnet``, BasicBlock [2, 2, 2, 2]) on the images, cropped and
  scaled as the ResNet image encoder sees them (``ImageEncoder.preprocess``: centre crop, Stein et
  al.'s RGB), with random flips as the official baseline augments (it also blurs; we do not);
- "conv_att": the spender-style Conv+Att encoder (``models.spender``) on each spectrum standardised
  over its good pixels (``specformer.standardise``), its mean and standard deviation joining the
  MLP as auxiliary inputs (the specformer sees them too, in its first token).

Training (PolymathicAI/AstroCLIP ``downstream_tasks/property_estimation/baselines``: Adam 5e-4,
50 epochs, batch 128, the best validation checkpoint): AdamW on the training split, early stopping
on the validation loss with the best epoch's weights restored. The predictions are for the query
half of the held-out galaxies (``knn.reference_query_split`` of validation + test, with the
evaluation seed), the very galaxies the k-NN rows predict; the early-stopping galaxies are the
validation split's reference half, so no query galaxy steers training.

A plain torch loop rather than the project's Lightning one (``train.loop.fit``): these are small
networks trained in about a minute from arrays held in memory, with no checkpoint to resume, and
early stopping with the best weights restored is a dozen lines here.
"""

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..data.augmentations import center_crop
from ..evaluate.knn import reference_query_split
from ..evaluate.property_prediction import SUPERVISED, TARGETS
from ..files import atomic_path, open_hdf5
from ..models.image_preprocessing import stein_rgb
from ..models.resnet import ResNet, ResNetConfig
from ..models.specformer import standardise
from ..models.spender import ConvAttentionConfig, SpectrumConvAttention
from .loop import settings_from_config

log = logging.getLogger(__name__)

#: The baselines by their short names (wildcards, file names) and their rows in the R² table.
BASELINES = SUPERVISED
#: Rows read from the dataset files at a time (the held-out images of a default run fill ~1 GB).
_CHUNK = 1024


@dataclass(frozen=True)
class BaselineSettings:
    """One-to-one with the ``baselines:`` block of the config (less ``enabled``)."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3
    max_train_galaxies: int | None = 3000
    max_val_galaxies: int | None = 500
    resnet_width: int = 16
    conv_att_preset: str = "astroclip"

    @classmethod
    def from_config(cls, block: dict) -> "BaselineSettings":
        return settings_from_config(cls, {k: v for k, v in block.items() if k != "enabled"})


@dataclass
class Inputs:
    """What a baseline network reads: ``x`` (n, ...) and, for Conv+Att, ``aux`` (n, 2); float32."""

    x: torch.Tensor
    aux: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, index) -> "Inputs":
        return Inputs(self.x[index], None if self.aux is None else self.aux[index])


def image_inputs(images: np.ndarray, crop: int) -> Inputs:
    """(n, 3, H, W) grz cutouts in nanomaggies -> (n, 3, crop, crop) in [0, 1], as ``ImageEncoder.preprocess``."""
    return Inputs(stein_rgb(center_crop(torch.as_tensor(images, dtype=torch.float32), crop)).contiguous())


def spectrum_inputs(flux: np.ndarray, ivar: np.ndarray) -> Inputs:
    """(n, n_pixels) flux and ivar -> standardised flux, and (mean, std) scaled as the specformer's first token."""
    standard, mean, std = standardise(torch.as_tensor(flux, dtype=torch.float32), torch.as_tensor(ivar))
    return Inputs(standard, torch.cat([(mean - 2.0) / 2.0, (std - 2.0) / 8.0], dim=1))


class Baseline(nn.Module):
    """A network with its inputs' layout: ``forward(Inputs)`` -> (batch, n_targets)."""

    def __init__(self, network: nn.Module, uses_aux: bool):
        super().__init__()
        self.network = network
        self.uses_aux = uses_aux

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.network(inputs.x, inputs.aux) if self.uses_aux else self.network(inputs.x)


def build_baseline(name: str, n_targets: int, settings: BaselineSettings) -> Baseline:
    """The untrained network of baseline ``name`` ("resnet18" or "conv_att") with ``n_targets`` outputs."""
    if name == "resnet18":
        network = ResNet(replace(ResNetConfig.preset("resnet18"), width=settings.resnet_width))
        network.fc = nn.Linear(network.feature_dim, n_targets)
        return Baseline(network, uses_aux=False)
    if name == "conv_att":
        config = ConvAttentionConfig.preset(settings.conv_att_preset)
        return Baseline(SpectrumConvAttention(config, n_targets, n_aux=2), uses_aux=True)
    raise ValueError(f"unknown supervised baseline {name!r}; expected one of {sorted(BASELINES)}")


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right and up-down with probability 1/2 each (a galaxy has no up)."""
    flip_x, flip_y = (torch.rand(len(images), generator=generator) < 0.5 for _ in range(2))
    images = torch.where(flip_x[:, None, None, None].to(images.device), images.flip(-1), images)
    return torch.where(flip_y[:, None, None, None].to(images.device), images.flip(-2), images)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite entries of ``target`` (a catalogue may lack a property)."""
    known = torch.isfinite(target)
    return ((predicted - torch.nan_to_num(target)) ** 2 * known).sum() / known.sum().clamp_min(1)


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs, batch_size: int = 256) -> torch.Tensor:
    """(n, n_targets) outputs of ``model`` in evaluation mode, on the model's device, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(Inputs(*(None if t is None else t.to(device) for t in (batch.x, batch.aux)))).cpu()
        for batch in (inputs.rows(slice(i, i + batch_size)) for i in range(0, len(inputs), batch_size))
    ]
    return torch.cat(out) if out else torch.zeros(0)


def fit_regressor(
    model: nn.Module,
    train: tuple[Inputs, torch.Tensor],
    val: tuple[Inputs, torch.Tensor],
    settings: BaselineSettings,
    seed: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    desc: str = "training",
) -> pd.DataFrame:
    """Train ``model`` in place on (inputs, standardised targets) with AdamW and MSE; stop once the
    validation loss has not improved for ``settings.patience`` epochs, and leave the model with
    the weights of its best validation epoch.

    Returns the history: one row per epoch with ``epoch``, ``train_loss``, ``val_loss`` and ``best``
    (True on the epoch whose weights the model keeps).

    Raises:
        ValueError: when the training set does not fill one batch (config key baselines.batch_size).
    """
    (x_train, y_train), (x_val, y_val) = train, val
    if len(x_train) < settings.batch_size:
        raise ValueError(
            f"config key 'baselines.batch_size': {settings.batch_size} is larger than the {len(x_train)} "
            "training galaxies, so no training step would run; lower it or train on more galaxies"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best_loss, best_state, best_epoch, rows = float("inf"), copy.deepcopy(model.state_dict()), -1, []
    epochs = tqdm(range(settings.epochs), desc=desc, unit="epoch")
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        losses = []
        for start in range(0, len(order) - settings.batch_size + 1, settings.batch_size):  # no ragged batch
            index = order[start : start + settings.batch_size]
            batch = x_train.rows(index)
            x = batch.x if augment is None else augment(batch.x, generator)
            aux = None if batch.aux is None else batch.aux.to(device)
            loss = masked_mse(model(Inputs(x.to(device), aux)), y_train[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val_loss = masked_mse(predict(model, x_val, 4 * settings.batch_size), y_val).item()
        if val_loss < best_loss:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        epochs.set_postfix(train=f"{rows[-1]['train_loss']:.3f}", val=f"{val_loss:.3f}")
        log.info("%s epoch %d: train loss %.4f, val loss %.4f", desc, epoch, rows[-1]["train_loss"], val_loss)
        if epoch - best_epoch >= settings.patience:
            log.info("%s: early stop, no better val loss for %d epochs", desc, settings.patience)
            break
    model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    history["best"] = history.epoch == best_epoch
    return history


def subsample(rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows`` (None: all), drawn at random and returned sorted (h5py reads
    increasing indices)."""
    if limit is None or len(rows) <= limit:
        return np.sort(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def read_rows(path: str | Path, rows: np.ndarray, modality: str, crop: int, targets: Sequence[str]):
    """The network inputs (``Inputs``), the targets (n, len(targets)) and the TARGETIDs of ``rows``
    (sorted indices) of a dataset file, read ``_CHUNK`` rows at a time."""
    parts, y, ids = [], [], []
    with open_hdf5(path, "r") as h5:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            if modality == "image":
                parts.append(image_inputs(h5["image"][chunk], crop))
            else:
                parts.append(spectrum_inputs(h5["spectrum"][chunk], h5["ivar"][chunk]))
            y.append(np.stack([h5[t][chunk].astype(float) for t in targets], axis=1))
            ids.append(h5["TARGETID"][chunk])
    if not parts:
        return Inputs(torch.zeros(0)), np.zeros((0, len(targets))), np.zeros(0, np.int64)
    aux = None if parts[0].aux is None else torch.cat([p.aux for p in parts])
    return Inputs(torch.cat([p.x for p in parts]), aux), np.concatenate(y), np.concatenate(ids)


def _count(path: str | Path, targets: Sequence[str] = ()) -> int:
    with open_hdf5(path, "r") as h5:
        absent = [k for k in ("TARGETID", "image", "spectrum", "ivar", *targets) if k not in h5]
        if absent:
            raise KeyError(f"{path}: no dataset(s) {absent}; expected a dataset file of the build_dataset rule")
        return len(h5["TARGETID"])


def present_targets(path: str | Path) -> list[str]:
    """The properties of ``TARGETS`` that the dataset file holds, in that order."""
    with open_hdf5(path, "r") as h5:
        present = [t for t in TARGETS if t in h5]
    if not present:
        raise KeyError(f"{path}: none of the properties {list(TARGETS)}; nothing for a baseline to learn")
    return present


def train_baseline(
    name: str,
    train_path: str | Path,
    val_path: str | Path,
    test_path: str | Path,
    output: str | Path,
    settings: dict | BaselineSettings,
    crop: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Train baseline ``name`` and write its predictions for the query half of validation + test.

    ``output`` (parquet) is the long table of ``property_prediction.predict_properties``: method
    (``BASELINES[name]``), target, TARGETID, true, predicted; a galaxy whose property is unknown is
    left out of that property's rows. ``crop`` is the image encoder's (config image_encoder.crop),
    ``seed`` the evaluation seed that also splits references from queries. Returns the predictions.
    """
    if not isinstance(settings, BaselineSettings):
        settings = BaselineSettings.from_config(settings)
    if name not in BASELINES:
        raise ValueError(f"unknown supervised baseline {name!r}; expected one of {sorted(BASELINES)}")
    modality = "image" if name == "resnet18" else "spectrum"
    targets = present_targets(train_path)
    n_train, n_val, n_test = (_count(p, targets) for p in (train_path, val_path, test_path))
    reference, query = reference_query_split(n_val + n_test, seed)
    train_rows = subsample(np.arange(n_train), settings.max_train_galaxies, seed)
    stop_rows = subsample(reference[reference < n_val], settings.max_val_galaxies, seed)
    if len(stop_rows) == 0:
        raise ValueError(
            f"{val_path}: none of its {n_val} galaxies is in the reference half, so nothing would stop "
            "the baselines' training; hold out more galaxies (config key dataset.split)"
        )
    log.info("%s: %d training galaxies, %d for early stopping, %d queries; targets %s",
             name, len(train_rows), len(stop_rows), len(query), targets)  # fmt: skip

    started = time.monotonic()
    x_train, y_train, _ = read_rows(train_path, train_rows, modality, crop, targets)
    x_stop, y_stop, _ = read_rows(val_path, stop_rows, modality, crop, targets)
    log.info("%s: read the training galaxies in %.1f s", name, time.monotonic() - started)
    mean, std = np.nanmean(y_train, axis=0), np.nanstd(y_train, axis=0)
    if not (np.isfinite(mean).all() and (std > 0).all()):
        raise ValueError(f"{train_path}: a property of {targets} is constant or unknown for every training galaxy")

    def scaled(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((y - mean) / std, dtype=torch.float32)

    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_baseline(name, len(targets), settings).to(device)
    fit_regressor(
        model, (x_train, scaled(y_train)), (x_stop, scaled(y_stop)), settings, seed,
        augment=random_flips if modality == "image" else None, desc=BASELINES[name],
    )  # fmt: skip
    del x_train, x_stop
    log.info("%s: trained in %.1f s", name, time.monotonic() - started)

    frames = []
    for path, rows in ((val_path, query[query < n_val]), (test_path, query[query >= n_val] - n_val)):
        x, y, ids = read_rows(path, rows, modality, crop, targets)
        predicted = predict(model, x).numpy() * std + mean if len(x) else np.zeros((0, len(targets)))
        for i, target in enumerate(targets):
            known = np.isfinite(y[:, i])
            frames.append(pd.DataFrame({
                "method": BASELINES[name], "target": target, "TARGETID": ids[known],
                "true": y[known, i], "predicted": predicted[known, i],
            }))  # fmt: skip
    predictions = pd.concat(frames, ignore_index=True)
    log.info("%s: predicted the queries, %.1f s in all", name, time.monotonic() - started)
    with atomic_path(output) as tmp:
        predictions.to_parquet(tmp, index=False)
    return predictions
