"""Stage 3a: pretrain the spectrum transformer by masked-segment filling."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ..data.galaxy_dataset import GalaxyDataset
from ..devices import require_gpus
from ..models.masked_segments import chunk_mask, hide, line_emphasis, masked_mse
from ..models.specformer import SpecFormer, SpecFormerConfig, n_tokens, save_encoder, tokenize
from .loop import (
    fit,
    input_fingerprint,
    prepare_run_dir,
    require_full_batch,
    seed_run,
    settings_from_config,
    split_loader,
    to_device,
    warmup_cosine,
    write_metrics,
)


@dataclass(frozen=True)
class PretrainSettings:
    """One-to-one with the ``pretrain_spectra:`` block of the config."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    gradient_clip: float = 1.0
    mask_chunks: int = 6
    mask_chunk_length: int = 30
    line_emphasis: float = 0.0
    line_emphasis_ramp: float = 0.0
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, block: dict) -> "PretrainSettings":
        return settings_from_config(cls, block)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; none on biases, LayerNorm gains and position embeddings."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim >= 2 and "position" not in name else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SpectrumPretraining(L.LightningModule):
    def __init__(self, model_config: dict, settings: dict):
        super().__init__()
        self.save_hyperparameters()
        self.model = SpecFormer(SpecFormerConfig(**model_config))
        self.settings = PretrainSettings.from_config(settings)

    def _loss(self, batch: dict, generator: torch.Generator | None = None, emphasis: float = 0.0) -> torch.Tensor:
        tokens, valid = tokenize(batch["spectrum"], batch["ivar"])
        s = self.settings
        mask = chunk_mask(tokens.shape[0], tokens.shape[1], s.mask_chunks, s.mask_chunk_length, generator)
        mask = to_device(mask, tokens.device)
        _, prediction = self.model(hide(tokens, mask))
        weight = line_emphasis(batch["spectrum"], batch["ivar"], emphasis) if emphasis > 0 else None
        return masked_mse(prediction.float(), tokens, mask, valid, weight)

    def line_emphasis_now(self) -> float:
        """The loss's ``line_emphasis`` at this step: ramped up linearly from 0 over the first
        ``line_emphasis_ramp`` of training, so that the continuum is learnt before the lines weigh."""
        s = self.settings
        if s.line_emphasis_ramp <= 0:
            return s.line_emphasis
        ramp_steps = s.line_emphasis_ramp * max(1, int(self.trainer.estimated_stepping_batches))
        return s.line_emphasis * min(1.0, self.global_step / ramp_steps)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, emphasis=self.line_emphasis_now())
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["spectrum"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same masks every epoch and the plain MSE (no line emphasis), so validation losses are
        # comparable from epoch to epoch and between runs.
        generator = torch.Generator().manual_seed(batch_idx)
        loss = self._loss(batch, generator)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["spectrum"]), sync_dist=True)

    def configure_optimizers(self):
        s = self.settings
        optimizer = torch.optim.AdamW(parameter_groups(self.model, s.weight_decay), lr=s.lr, betas=s.betas)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, s.warmup_steps, total, s.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def pretrain_spectra(
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
    """Train (or resume training) and write the encoder file and the metrics table.

    ``model`` is the ``spectrum_encoder:`` config block (a preset name and overrides), ``settings``
    the ``pretrain_spectra:`` block; ``cpu_fallback`` lets ``gpus`` > 0 train on the CPU when CUDA
    sees no GPU (``require_gpus``), which otherwise stops at once with a RuntimeError;
    ``code_version`` (the rule's library digest) is part of the run's identity: a checkpoint made by
    other code is not resumed.
    """
    s = PretrainSettings.from_config(settings)
    require_gpus(s.gpus, "pretrain_spectra", cpu_fallback)
    require_full_batch(
        len(GalaxyDataset(train_path, fields=(), columns=())), s.batch_size, s.gpus, "pretrain_spectra", train_path
    )
    overrides = {k: v for k, v in model.items() if k != "preset" and v is not None}
    model_config = asdict(SpecFormerConfig.preset(model["preset"], **overrides))
    prepare_run_dir(
        run_dir,
        {
            "model": model_config,
            "settings": asdict(s),
            "inputs": input_fingerprint([train_path, val_path]),
            "code": code_version,
        },
    )
    train = split_loader(
        GalaxyDataset(train_path, fields=("spectrum", "ivar"), columns=()), s.batch_size, True, s.num_workers
    )
    val = split_loader(
        GalaxyDataset(val_path, fields=("spectrum", "ivar"), columns=()), s.batch_size, False, s.num_workers
    )
    n_pixels = train.dataset[0]["spectrum"].shape[0]
    if n_tokens(n_pixels) > model_config["max_len"]:
        raise ValueError(f"{train_path}: {n_tokens(n_pixels)} tokens exceed max_len {model_config['max_len']}")
    try:  # the masks of the first step, drawn now: chunks that cannot fit stop the run before training
        chunk_mask(1, n_tokens(n_pixels), s.mask_chunks, s.mask_chunk_length)
    except ValueError as err:
        raise ValueError(f"{train_path}: spectra of {n_pixels} pixels: {err}") from err
    seed_run(s.seed)
    module = SpectrumPretraining(model_config, asdict(s))
    fit(module, train, val, run_dir, s.epochs, s.gradient_clip, devices=max(1, s.gpus), callbacks=callbacks)
    save_encoder(module.model, encoder_path)
    write_metrics(run_dir, metrics_path)
