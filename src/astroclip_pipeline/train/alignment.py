"""Stage 4: contrastive alignment of the image and spectrum embeddings (AstroCLIP v1).

Both backbones are frozen (unless the config unfreezes parts of them), so their outputs need not be
recomputed every epoch:

- Images are augmented only by the eight exact rotations/flips of the pixel grid (unless noise or
  blur is switched on). What the frozen image backbone hands the head (the pooled ResNet features,
  or the ViT's final tokens) is computed once for all eight orientations of every cutout, and each
  epoch draws one of them per galaxy: the same augmentation, at the cost of a lookup.
- Spectra are not augmented, so the transformer's hidden states are computed once too, when they
  fit the memory budget (``cache_memory_gib``): at laptop scale they do; at paper scale (778
  tokens x 768 x 2 bytes = 1.2 MB a spectrum) they do not, and the frozen transformer runs inside
  the training step, in bf16 with flash attention on a GPU.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.augmentations import N_ORIENTATIONS, AugmentationSpec, dihedral, random_blur, random_dihedral, random_noise
from ..data.galaxy_dataset import GalaxyDataset
from ..devices import require_gpus
from ..files import open_hdf5
from ..models.astroclip import AstroCLIP, save_astroclip, set_trainable
from ..models.image_encoder import load_image_encoder
from ..models.specformer import load_encoder, n_tokens
from .contrastive import distributed_clip_loss
from .loop import (
    fit,
    input_fingerprint,
    prepare_run_dir,
    require_full_batch,
    seed_run,
    settings_from_config,
    split_loader,
    warmup_cosine,
    write_metrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignSettings:
    """One-to-one with the ``align:`` block of the config."""

    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "plateau"
    plateau_factor: float = 2.0
    plateau_patience: int = 5
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    logit_scale: float = 15.5
    learnable_logit_scale: bool = False
    embed_dim: int = 128
    n_heads: int = 4
    image_tokens: str = "all"
    image_trainable: tuple[str, ...] = field(default_factory=tuple)
    spectrum_trainable: tuple[str, ...] = field(default_factory=tuple)
    noise: bool = False
    blur: bool = False
    cache_image_features: bool = True
    cache_spectrum_features: bool = True
    cache_memory_gib: float = 4.0
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, block: dict) -> "AlignSettings":
        return settings_from_config(cls, block)

    @property
    def image_features_cacheable(self) -> bool:
        """Cached features are exact only if nothing before the head trains and the only
        augmentations are the grid's symmetries."""
        return self.cache_image_features and not self.image_trainable and not (self.noise or self.blur)

    @property
    def spectrum_features_cacheable(self) -> bool:
        return self.cache_spectrum_features and not self.spectrum_trainable


class AlignmentData(Dataset):
    """Rows of a dataset file, with cached backbone outputs (one tensor per name) in place of raw fields."""

    def __init__(self, path: str | Path, cached: dict[str, torch.Tensor]):
        fields = [] if "image_features" in cached else ["image"]
        fields += [] if "hidden" in cached else ["spectrum", "ivar"]
        self.rows = GalaxyDataset(path, fields=fields, columns=())
        self.cached = cached
        for name, tensor in cached.items():
            if len(tensor) != len(self.rows):
                raise ValueError(f"cached {name} has {len(tensor)} rows for the {len(self.rows)} of {path}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index] | {name: tensor[index] for name, tensor in self.cached.items()}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def cache_image_features(model: AstroCLIP, path: str | Path, batch_size: int = 256) -> torch.Tensor:
    """The image head's input for every cutout in all eight orientations: (n, 8, ...) (pooled
    ResNet features, or the ViT's tokens)."""
    device = _device()
    model.image_encoder.to(device).eval()
    rows = DataLoader(GalaxyDataset(path, fields=("image",), columns=()), batch_size=batch_size)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    chunks = []
    for batch in tqdm(rows, desc=f"image features of {Path(path).name} (8 orientations)", unit="batch"):
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = [model.image_head_input(dihedral(images, o)) for o in range(N_ORIENTATIONS)]
        chunks.append(torch.stack(features, dim=1).to("cpu", dtype))
    return torch.cat(chunks)


@torch.no_grad()
def cache_spectrum_hidden(model: AstroCLIP, path: str | Path, batch_size: int = 64) -> torch.Tensor:
    """The frozen transformer's hidden states of every spectrum: (n, tokens, embed_dim)."""
    device = _device()
    model.spectrum_encoder.to(device).eval()
    rows = DataLoader(GalaxyDataset(path, fields=("spectrum", "ivar"), columns=()), batch_size=batch_size)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    chunks = []
    for batch in tqdm(rows, desc=f"spectrum hidden states of {Path(path).name}", unit="batch"):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = model.spectrum_hidden(batch["spectrum"].to(device), batch["ivar"].to(device))
        chunks.append(hidden.to("cpu", dtype))
    return torch.cat(chunks)


def cache_sizes(model: AstroCLIP, n_rows: int, n_pixels: int) -> tuple[float, float]:
    """Bytes that the image-feature and the hidden-state caches of ``n_rows`` galaxies would take."""
    itemsize = 2 if torch.cuda.is_available() else 4
    image = n_rows * N_ORIENTATIONS * model.image_head_input_size() * itemsize
    spectrum = n_rows * n_tokens(n_pixels) * model.spectrum_encoder.config.embed_dim * itemsize
    return image, spectrum


class AlignmentModule(L.LightningModule):
    def __init__(self, model: AstroCLIP, settings: dict):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.settings = s = AlignSettings.from_config(settings)
        # a ResNet's head is its dense layers (``fc``); a ViT's is a module of its own, always trained
        head = ("fc",) if model.image_encoder.architecture == "resnet" else ()
        set_trainable(model.image_encoder.backbone, (*head, *s.image_trainable), "align.image_trainable")
        set_trainable(model.spectrum_encoder, s.spectrum_trainable, "align.spectrum_trainable")
        scale = torch.tensor(float(s.logit_scale)).log()
        if s.learnable_logit_scale:
            self.log_logit_scale = torch.nn.Parameter(scale)
        else:
            self.register_buffer("log_logit_scale", scale)
        self.augmentations = AugmentationSpec(crop=model.image_encoder.crop)

    def train(self, mode: bool = True):
        # The backbones stay in evaluation mode: frozen BatchNorm statistics, no dropout.
        super().train(mode)
        self.model.image_encoder.eval()
        self.model.spectrum_encoder.eval()
        return self

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        images = random_dihedral(images)
        if self.settings.blur:
            images = random_blur(images, self.augmentations)
        if self.settings.noise:
            images = random_noise(images, self.augmentations)
        return images

    def _image_embedding(self, batch: dict, training: bool) -> torch.Tensor:
        if "image_features" in batch:
            features = batch["image_features"]
            index = torch.arange(len(features), device=features.device)
            orientation = torch.randint(N_ORIENTATIONS, (len(features),), device=features.device) if training else 0
            return self.model.image_embedding(features=features[index, orientation].float())
        images = self._augment(batch["image"]) if training else batch["image"]
        with torch.set_grad_enabled(training and bool(self.settings.image_trainable)):
            features = self.model.image_head_input(images)
        return self.model.image_embedding(features=features)

    def _spectrum_embedding(self, batch: dict, training: bool) -> torch.Tensor:
        if "hidden" in batch:
            return self.model.spectrum_embedding(hidden=batch["hidden"].float())
        with torch.set_grad_enabled(training and bool(self.settings.spectrum_trainable)):
            hidden = self.model.spectrum_hidden(batch["spectrum"], batch["ivar"])
        return self.model.spectrum_embedding(hidden=hidden)

    def _loss(self, batch: dict, training: bool):
        image = self._image_embedding(batch, training)
        spectrum = self._spectrum_embedding(batch, training)
        return distributed_clip_loss(image, spectrum, self.log_logit_scale.exp().clamp(max=100.0))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, reported = self._loss(batch, training=True)
        n = len(next(iter(batch.values())))
        self.log("train_loss", reported, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        if self.settings.learnable_logit_scale:
            self.log("logit_scale", self.log_logit_scale.exp().detach(), on_step=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, reported = self._loss(batch, training=False)
        n = len(next(iter(batch.values())))
        self.log("val_loss", reported, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        s = self.settings
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=s.lr, weight_decay=s.weight_decay)
        if s.schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=1.0 / s.plateau_factor, patience=s.plateau_patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"},
            }
        total = int(self.trainer.estimated_stepping_batches)
        cosine = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, s.warmup_steps, total, s.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


def build_model(spectrum_encoder_path: str | Path, image_encoder_path: str | Path, s: AlignSettings) -> AstroCLIP:
    return AstroCLIP(
        load_image_encoder(image_encoder_path), load_encoder(spectrum_encoder_path), s.embed_dim, s.n_heads,
        s.image_tokens,
    )  # fmt: skip


def frozen_feature_caches(
    model: AstroCLIP, paths: Sequence[str | Path], s: AlignSettings
) -> list[dict[str, torch.Tensor]]:
    """For each split file, the backbone outputs worth caching under the memory budget (see the module's docstring)."""
    # the sizes from the files' shapes: a Dataset of the spectra would read them all into memory
    n_rows = sum(len(GalaxyDataset(p, fields=(), columns=())) for p in paths)
    with open_hdf5(paths[0], "r") as h5:
        n_pixels = h5["spectrum"].shape[1]
    image_bytes, spectrum_bytes = cache_sizes(model, n_rows, n_pixels)
    budget = s.cache_memory_gib * 2**30
    use_image = s.image_features_cacheable and image_bytes <= budget
    use_spectrum = s.spectrum_features_cacheable and image_bytes * use_image + spectrum_bytes <= budget
    log.info(
        "feature caches: images %s (%.2f GiB), spectra %s (%.2f GiB), budget %.1f GiB",
        "on" if use_image else "off", image_bytes / 2**30, "on" if use_spectrum else "off",
        spectrum_bytes / 2**30, s.cache_memory_gib,
    )  # fmt: skip
    caches = []
    for path in paths:
        cache = {}
        if use_image:
            cache["image_features"] = cache_image_features(model, path)
        if use_spectrum:
            cache["hidden"] = cache_spectrum_hidden(model, path)
        caches.append(cache)
    model.cpu()
    return caches


def align(
    train_path: str | Path,
    val_path: str | Path,
    spectrum_encoder_path: str | Path,
    image_encoder_path: str | Path,
    run_dir: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    settings: dict,
    callbacks: Sequence[Callback] = (),
    cpu_fallback: bool = False,
    code_version: str | None = None,
) -> None:
    """Train (or resume training) the alignment heads and write the AstroCLIP model and the metrics table.

    ``cpu_fallback`` as in ``require_gpus``: without it, ``gpus`` > 0 and no visible GPU stop at once.
    ``code_version`` (the rule's library digest) is part of the run's identity, as in ``pretrain_spectra``.
    """
    s = AlignSettings.from_config(settings)
    require_gpus(s.gpus, "align", cpu_fallback)
    require_full_batch(len(GalaxyDataset(train_path, fields=(), columns=())), s.batch_size, s.gpus, "align", train_path)
    inputs = input_fingerprint([train_path, val_path, spectrum_encoder_path, image_encoder_path])
    prepare_run_dir(run_dir, {"settings": asdict(s), "inputs": inputs, "code": code_version})
    seed_run(s.seed)  # the heads' initial weights
    model = build_model(spectrum_encoder_path, image_encoder_path, s)
    train_cache, val_cache = frozen_feature_caches(model, [train_path, val_path], s)
    # Cached tensors live in this process's memory; forked workers would copy them, so load in-process.
    workers = 0 if (train_cache or val_cache) else s.num_workers
    train = split_loader(AlignmentData(train_path, train_cache), s.batch_size, True, workers)
    val = split_loader(AlignmentData(val_path, val_cache), s.batch_size, False, workers)
    module = AlignmentModule(model, asdict(s))
    fit(module, train, val, run_dir, s.epochs, gradient_clip=1.0, devices=max(1, s.gpus), callbacks=callbacks)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        save_astroclip(module.model, model_path, asdict(s))
        write_metrics(run_dir, metrics_path)
