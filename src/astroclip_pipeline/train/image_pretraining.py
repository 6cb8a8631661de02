"""Stage 3b: self-supervised pretraining of the image encoder with MoCo v2 (He et al. 2020; Chen et
al. 2020), as Stein et al. (2021) trained theirs on Legacy Survey cutouts.

Two augmented views of each galaxy go through a query encoder and a momentum ("key") encoder,
an exponential moving average of the query encoder. InfoNCE pulls a view's query towards its
own key and away from a queue of keys of earlier batches. The queue supplies many negatives
without a huge batch; it must stay shorter than the training set, or galaxies meet themselves
among their own negatives (Stein et al. used 65,536 with 3.5 million cutouts).

The module's parameter names follow Stein et al.'s checkpoint (``encoder_q.*``, ``encoder_k.*``,
``queue``, ``queue_ptr``), so our checkpoints and theirs are read by the same key map.
"""

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from ..data.augmentations import AugmentationSpec, augment
from ..data.galaxy_dataset import GalaxyDataset
from ..devices import require_gpus
from ..models.image_encoder import ImageEncoder, save_image_encoder
from ..models.image_preprocessing import stein_rgb
from ..models.resnet import ResNetConfig
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


@dataclass(frozen=True)
class ImagePretrainSettings:
    """One-to-one with the ``pretrain_images:`` block of the config."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    temperature: float = 0.2
    queue_size: int = 1024
    encoder_momentum: float = 0.99
    projection_dim: int = 128
    max_shift: float = 4.0
    scale: tuple[float, float] = (0.9, 1.1)
    blur_probability: float = 0.5
    max_ebv: float = 0.05
    band_jitter_mag: float = 0.0
    noise_sigma_max: tuple[float, float, float] = (0.013, 0.018, 0.061)
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, block: dict) -> "ImagePretrainSettings":
        return settings_from_config(cls, block)

    def augmentations(self, crop: int) -> AugmentationSpec:
        floor = AugmentationSpec().noise_sigma[0][0]
        return AugmentationSpec(
            crop=crop, scale=self.scale, max_shift=self.max_shift, blur_probability=self.blur_probability,
            noise_sigma=tuple((floor, high) for high in self.noise_sigma_max), max_ebv=self.max_ebv,
            max_band_jitter=self.band_jitter_mag,
        )  # fmt: skip


def info_nce_logits(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo logits: column 0 the positive pair q·k, then q against every queued negative; / τ."""
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ queue
    return torch.cat([positive, negative], dim=1) / temperature


class MoCoPretraining(L.LightningModule):
    def __init__(self, model_config: dict, crop: int, settings: dict):
        super().__init__()
        self.save_hyperparameters()
        self.settings = ImagePretrainSettings.from_config(settings)
        config = ResNetConfig(**{**model_config, "layers": tuple(model_config["layers"])})
        self.crop = crop
        self.head = (config.feature_dim, self.settings.projection_dim)
        self.encoder_q = ImageEncoder(config, crop, self.head).backbone
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.spec = self.settings.augmentations(crop)
        queue = F.normalize(torch.randn(self.settings.projection_dim, self.settings.queue_size), dim=0)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def image_encoder(self) -> ImageEncoder:
        """The query encoder with its preprocessing, as the later stages use it."""
        encoder = ImageEncoder(self.encoder_q.config, self.crop, self.head)
        encoder.backbone.load_state_dict(self.encoder_q.state_dict())
        return encoder.eval()

    def _views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        return [stein_rgb(augment(images, self.spec, generator)) for _ in range(2)]

    @torch.no_grad()
    def _update_key_encoder(self) -> None:
        m = self.settings.encoder_momentum
        for k, q in zip(self.encoder_k.parameters(), self.encoder_q.parameters(), strict=True):
            k.mul_(m).add_(q.detach(), alpha=1 - m)
        for k, q in zip(self.encoder_k.buffers(), self.encoder_q.buffers(), strict=True):
            k.copy_(q)  # BatchNorm statistics follow the query encoder

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[1]
        keys = keys[-size:]
        # Modular indices, so any batch size works with any queue size.
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[:, index] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def _loss(self, images: torch.Tensor, generator: torch.Generator | None = None):
        view_q, view_k = self._views(images, generator)
        query = F.normalize(self.encoder_q(view_q).float(), dim=1)
        with torch.no_grad():
            key = F.normalize(self.encoder_k(view_k).float(), dim=1)
        logits = info_nce_logits(query, key, self.queue.clone().detach(), self.settings.temperature)
        labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels), logits, key

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._update_key_encoder()
        loss, logits, key = self._loss(batch["image"])
        # every rank's keys, so that all ranks keep the same queue (all_gather is a no-op on one device)
        self._enqueue(self.all_gather(key).reshape(-1, key.shape[1]))
        top1 = (logits.argmax(dim=1) == 0).float().mean()
        n = len(batch["image"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train_top1", top1, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same augmentations every epoch, and the queue is left alone, so epochs compare.
        generator = torch.Generator().manual_seed(batch_idx)
        loss, logits, _ = self._loss(batch["image"], generator)
        top1 = (logits.argmax(dim=1) == 0).float().mean()
        n = len(batch["image"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_top1", top1, on_epoch=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        s = self.settings
        optimizer = torch.optim.SGD(
            self.encoder_q.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = s.warmup_epochs * total // max(1, s.epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, 0.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def model_config_of(block: dict) -> tuple[dict, int]:
    """The ``image_encoder:`` config block -> (ResNet config as a dict, crop)."""
    config = asdict(ResNetConfig.preset(block["preset"]))
    if block.get("width") is not None:
        config["width"] = block["width"]
    return config, int(block["crop"])


def image_loaders(train_path, val_path, batch_size: int, num_workers: int, crop: int) -> tuple:
    """Training and validation loaders of the cutouts alone, after checking that they hold ``crop``."""
    train = split_loader(GalaxyDataset(train_path, fields=("image",), columns=()), batch_size, True, num_workers)
    val = split_loader(GalaxyDataset(val_path, fields=("image",), columns=()), batch_size, False, num_workers)
    size = train.dataset[0]["image"].shape[-1]
    if crop > size:
        raise ValueError(
            f"config key 'image_encoder.crop': {crop} is larger than the {size}-pixel cutouts of {train_path}"
        )
    return train, val


def pretrain_images(
    train_path: str | Path,
    val_path: str | Path,
    run_dir: str | Path,
    encoder_path: str | Path,
    metrics_path: str | Path,
    model: dict,
    settings: dict,
    callbacks: Sequence[Callback] = (),
    cpu_fallback: bool = False,
    code_version: str | None = None,
) -> None:
    """Train (or resume training) with MoCo v2 and write the encoder file and the metrics table.

    ``model`` is the ``image_encoder:`` config block, ``settings`` the ``pretrain_images:`` block;
    ``cpu_fallback`` as in ``require_gpus``; ``code_version`` as in ``pretrain_spectra``.
    """
    s = ImagePretrainSettings.from_config(settings)
    require_gpus(s.gpus, "pretrain_images", cpu_fallback)
    require_full_batch(
        len(GalaxyDataset(train_path, fields=(), columns=())), s.batch_size, s.gpus, "pretrain_images", train_path
    )
    model_config, crop = model_config_of(model)
    prepare_run_dir(
        run_dir,
        {
            "model": model_config,
            "crop": crop,
            "settings": asdict(s),
            "inputs": input_fingerprint([train_path, val_path]),
            "code": code_version,
        },
    )
    train, val = image_loaders(train_path, val_path, s.batch_size, s.num_workers, crop)
    if s.queue_size >= len(train.dataset):
        raise ValueError(
            f"config key 'pretrain_images.queue_size': {s.queue_size} is not smaller than the "
            f"{len(train.dataset)} training images of {train_path}; galaxies would be their own negatives"
        )
    seed_run(s.seed)
    module = MoCoPretraining(model_config, crop, asdict(s))
    fit(module, train, val, run_dir, s.epochs, gradient_clip=None, devices=max(1, s.gpus), callbacks=callbacks)
    save_image_encoder(module.image_encoder(), encoder_path, source="pretrain_images (MoCo v2)")
    write_metrics(run_dir, metrics_path)
