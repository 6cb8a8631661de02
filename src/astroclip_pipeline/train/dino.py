"""Stage 3b, AstroCLIP v2: self-supervised pretraining of the image ViT by self-distillation with the
DINOv2 recipe (Oquab et al. 2023, facebookresearch/dinov2), as AstroDINO (Parker et al. 2024,
PolymathicAI/AstroCLIP ``astrodino/``) trained it on Legacy Survey cutouts.

A student ViT and a teacher ViT (an exponential moving average of the student, its momentum
rising from 0.992 to 1 on a cosine) see several crops of each galaxy: two global crops (the size
the ViT is made for) and several small local crops (positions resampled, ``vit.py``). Each
backbone is followed by the DINO head: an MLP to a 256-d bottleneck, L2-normalised, then a
weight-normalised linear layer onto K "prototypes". Three losses:

- DINO: for every pair (student crop, teacher global crop) of different crops, the cross-entropy
  between the teacher's distribution over prototypes (centred, sharpened by a temperature that
  warms up from 0.04 to 0.07) and the student's (temperature 0.1). Centring (subtracting a running
  mean of the teacher's logits) and sharpening together keep the teacher from collapsing.
- iBOT: some patches of the student's global crops are hidden (replaced by the mask token, in
  rectangular blocks); the student's tokens at those places must predict the teacher's tokens
  there, which saw the whole crop; the same head and loss, with its own centre.
- KoLeo: minus the log of each student CLS feature's distance to its nearest neighbour in the
  batch, which spreads the features over the sphere.

Optimisation as DINOv2: AdamW, the learning rate scaled by sqrt(batch / 1024), linear warm-up
then cosine; layer-wise decay (block i of L gets decay^(L + 1 - (i + 1)) of the rate, the patch
embedding, positions and tokens decay^(L + 1), and the patch embedding another 0.2x); no weight
decay on biases, norms and LayerScale; the weight decay itself rising on a cosine; the last layer
of the head frozen during the first epoch; gradients clipped per module (backbone, head).

Augmentations: AstroDINO's are plain random crops (no resizing) with flips, then Stein et al.'s
PSF blur and noise, then the viewer's RGB mapping, in place of DINOv2's colour jitter, grey,
solarisation. We use the project's (``data/augmentations.py``): the same blur and noise, plus
Galactic reddening (a colour change real surveys have), but not the per-band colour jitter that
MoCo may use (``AugmentationSpec.max_band_jitter``): AstroDINO has none, and these views are
composed here, not by ``augment``. Which view is degraded how often: see
``DinoSettings.degrade_probability``.

Under DDP everything global is exact: both centres are updated with the mean over every rank's
outputs (an all-reduce of sums and counts), and each rank's loss is a mean over its own images,
so that the gradients DDP averages are those of the global batch. KoLeo's nearest neighbours are
sought within each rank's batch, as in DINOv2.
"""

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from ..data.augmentations import AugmentationSpec, random_blur, random_crop_flip, random_noise, random_reddening
from ..data.galaxy_dataset import GalaxyDataset
from ..devices import require_gpus
from ..models.image_encoder import ViTImageEncoder, save_image_encoder
from ..models.image_preprocessing import viewer_rgb
from ..models.vit import VisionTransformer, ViTConfig, vit_config_of
from .image_pretraining import image_loaders
from .loop import (
    fit,
    input_fingerprint,
    prepare_run_dir,
    require_full_batch,
    seed_run,
    settings_from_config,
    to_device,
    warmup_cosine,
    write_metrics,
)


@dataclass(frozen=True)
class DinoSettings:
    """One-to-one with the ``pretrain_dino:`` block of the config; AstroDINO's values in comments
    where the laptop default differs (its config: PolymathicAI/AstroCLIP astrodino/config.yaml)."""

    epochs: int = 10  # 200 "epochs" of 1,250 steps
    batch_size: int = 64  # 72 per GPU on 20 GPUs
    lr: float = 2e-3  # 2e-4 for a batch of 1,024, scaled by sqrt(batch / 1024)
    min_lr: float = 1e-6
    warmup_epochs: int = 1  # 32
    weight_decay: float = 0.001
    weight_decay_end: float = 0.01
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    gradient_clip: float = 3.0
    freeze_last_layer_epochs: int = 1
    teacher_momentum: float = 0.992  # rises to 1 on a cosine
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 3  # 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    n_prototypes: int = 1024  # 65,536
    head_hidden_dim: int = 256  # 2,048
    head_bottleneck_dim: int = 64  # 256
    head_layers: int = 3
    head_batchnorm: bool = False
    koleo_weight: float = 0.1
    ibot_weight: float = 1.0
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    local_crops: int = 4  # 8
    local_crop: int = 24  # 60 of AstroDINO's 144-pixel global crops
    # Probability that the PSF blur and the noise are applied to (global crop 1, global crop 2,
    # each local crop). DINOv2 blurs its first global view always, its second with 0.1 and local
    # views with 0.5 (``GaussianBlur(p=...)``, p the probability to apply). AstroDINO passes the
    # same numbers to its ``RandomGaussianBlur``/``RandomGaussianNoise``, which hand 1 - p to
    # torchvision's RandomApply, so as run it never degrades the first view and degrades the
    # second with 0.9. We keep DINOv2's meaning: the recipe's intent, and the project's
    # convention that a probability is the chance to apply. The asymmetry that matters, one
    # global view mostly clean and one mostly degraded, is the same either way; (0.0, 0.9, 0.5)
    # reproduces AstroDINO as run.
    degrade_probability: tuple[float, float, float] = (1.0, 0.1, 0.5)
    max_ebv: float = 0.05
    noise_sigma_max: tuple[float, float, float] = (0.013, 0.018, 0.061)
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, block: dict) -> "DinoSettings":
        return settings_from_config(cls, block)

    def augmentations(self, view: int) -> AugmentationSpec:
        """Blur, noise and reddening of view 0 or 1 (global) or 2 (local)."""
        floor = AugmentationSpec().noise_sigma[0][0]
        p = self.degrade_probability[view]
        return AugmentationSpec(
            blur_probability=p, noise_probability=p, max_ebv=self.max_ebv,
            noise_sigma=tuple((floor, high) for high in self.noise_sigma_max),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The head and the losses


class WeightNormLinear(nn.Module):
    """Linear map (no bias) by the row-normalised weight: DINO's last layer.

    DINOv2 wraps the layer in ``weight_norm`` and freezes the norm g at 1, which makes each
    prototype the unit vector v / |v|; that is what this computes, without the deprecated wrapper.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """Features (..., in_dim) -> logits over prototypes (..., n_prototypes): MLP, L2 norm, last layer."""

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int,
        hidden_dim: int,
        bottleneck_dim: int,
        n_layers: int = 3,
        batchnorm: bool = False,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            hidden = i < n_layers - 1
            layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if hidden and batchnorm else [])
            layers += [nn.GELU()] if hidden else []
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, n_prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def teacher_probabilities(logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's target: softmax((logits - centre) / temperature) over prototypes."""
    return torch.softmax((logits.float() - center) / temperature, dim=-1)


def cross_entropy(target: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum_k target_k log softmax(student / temperature)_k, per row."""
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(dim=-1)


def dino_loss(
    student_global: torch.Tensor, student_local: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over (student crop, teacher crop) pairs of different crops of the batch-mean cross-entropy.

    ``student_global`` (2, batch, K) and ``student_local`` (n_local, batch, K) are logits,
    ``teacher`` (2, batch, K) the teacher's probabilities for the two global crops.
    """
    terms = [
        cross_entropy(t, s, temperature).mean()
        for i, s in enumerate(student_global)
        for j, t in enumerate(teacher)
        if i != j
    ]
    terms += [cross_entropy(t, s, temperature).mean() for s in student_local for t in teacher]
    return torch.stack(terms).mean()


def ibot_loss(student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor, temperature: float) -> torch.Tensor:
    """iBOT's masked-patch loss: (masked patches, K) logits and teacher probabilities, ``masks``
    (images, patches). Each image's masked patches share a weight of 1, so an image counts the same
    however many patches it hides; the sum is divided by the number of images (DINOv2's
    ``iBOTPatchLoss.forward_masked``)."""
    # ``masks`` may stay on the CPU (the training step keeps it there): selecting with it is then
    # no wait for the GPU, and the weights travel to the GPU with the rest of the step's inputs.
    weight = to_device((1.0 / masks.sum(dim=1).clamp_min(1)).unsqueeze(1).expand_as(masks)[masks], student.device)
    return (cross_entropy(teacher, student, temperature) * weight).sum() / len(masks)


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator (Sablayrolles et al. 2019, DINOv2's KoLeoLoss):
    -mean log distance of each L2-normalised feature (batch, dim) to its nearest neighbour; 0 for
    fewer than two rows (a last validation batch of one has no neighbour)."""
    if len(features) < 2:
        return features.new_zeros((), dtype=torch.float32)
    x = F.normalize(features.float(), dim=-1, eps=eps)
    similarity = x @ x.T
    similarity.fill_diagonal_(-2.0)  # never one's own neighbour
    nearest = similarity.argmax(dim=1)
    return -torch.log(F.pairwise_distance(x, x[nearest], eps=eps) + eps).mean()


def block_masks(
    n_images: int, grid: int, probability: float, ratio: tuple[float, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """iBOT masks (n_images, grid * grid), True where hidden, as DINOv2's collate makes them.

    A fraction ``probability`` of the images get a mask; their target ratios spread evenly over
    ``ratio`` (each drawn inside its own slice); each mask is built of random rectangles (aspect
    ratio 0.3-3.3, at least 4 patches) until it reaches its target (BEiT's block-wise masking).
    """
    masks = torch.zeros(n_images, grid, grid, dtype=torch.bool)
    n_masked = int(n_images * probability)
    edges = torch.linspace(ratio[0], ratio[1], n_masked + 1)
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    for i in range(n_masked):
        target = int(grid * grid * (edges[i] + (edges[i + 1] - edges[i]) * rand()))
        mask = masks[i]
        for _ in range(100):  # rectangles until the target; a bounded number of tries
            left = target - int(mask.sum())
            if left <= 0:
                break
            area = 4 + (max(4, left) - 4) * rand()
            aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * rand())
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < h < grid and 0 < w < grid):
                continue
            top, lft = int(rand() * (grid - h + 1)), int(rand() * (grid - w + 1))
            new = int((~mask[top : top + h, lft : lft + w]).sum())
            if 0 < new <= left:
                mask[top : top + h, lft : lft + w] = True
    order = torch.randperm(n_images, generator=generator)
    return masks.reshape(n_images, -1)[order]


# ---------------------------------------------------------------------------------------------
# Schedules and parameter groups


def teacher_temperature(epoch: float, s: DinoSettings) -> float:
    """Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up epochs, then constant."""
    if epoch >= s.warmup_teacher_temp_epochs:
        return s.teacher_temp
    return s.warmup_teacher_temp + (s.teacher_temp - s.warmup_teacher_temp) * epoch / s.warmup_teacher_temp_epochs


def cosine_rise(step: int, total: int, start: float, end: float) -> float:
    """From ``start`` at step 0 to ``end`` at ``total`` on a half cosine (momentum, weight decay)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


def parameter_groups(backbone: VisionTransformer, head: nn.Module, s: DinoSettings) -> list[dict]:
    """AdamW groups with DINOv2's per-parameter multipliers (``get_params_groups_with_decay``).

    ``lr_mult``: layer_decay^(L + 1 - layer) with layer 0 for the patch embedding, positions and
    tokens, i + 1 for block i, L + 1 for the final norm and the head; x ``patch_embed_lr_mult`` for
    the patch embedding. ``wd_mult``: 0 for biases, norms and LayerScale (every 1-d parameter).
    ``last_layer`` marks the head's prototypes, frozen in the first epochs.
    """
    depth = len(backbone.blocks)
    named = [(f"backbone.{n}", p) for n, p in backbone.named_parameters()]
    named += [(f"head.{n}", p) for n, p in head.named_parameters()]
    groups: dict[tuple, dict] = {}
    for name, parameter in named:
        if name.startswith("backbone.blocks."):
            layer = int(name.split(".")[2]) + 1
        elif name.split(".")[1] in ("patch_embed", "pos_embed", "cls_token", "mask_token"):
            layer = 0
        else:
            layer = depth + 1
        lr_mult = s.layer_decay ** (depth + 1 - layer)
        patch_embed = name.startswith("backbone.patch_embed")
        if patch_embed:
            lr_mult *= s.patch_embed_lr_mult
        wd_mult = 0.0 if parameter.ndim <= 1 else 1.0
        last_layer = name.startswith("head.last_layer")
        key = (lr_mult, wd_mult, last_layer)
        group_name = "patch_embed" if patch_embed else "prototypes" if last_layer else f"layer{layer}"
        group_name += "_no_wd" if wd_mult == 0 else ""
        group = groups.setdefault(
            key, {"params": [], "lr_mult": lr_mult, "wd_mult": wd_mult, "last_layer": last_layer, "name": group_name}
        )
        group["params"].append(parameter)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# The Lightning module


class DinoPretraining(L.LightningModule):
    def __init__(self, model_config: dict, settings: dict):
        super().__init__()
        self.save_hyperparameters()
        self.settings = DinoSettings.from_config(settings)
        s = self.settings
        config = ViTConfig(**model_config)
        if s.local_crop % config.patch_size or s.local_crop > config.image_size:
            raise ValueError(
                f"config key 'pretrain_dino.local_crop': {s.local_crop} must be a multiple of the ViT's "
                f"{config.patch_size}-pixel patches and at most its {config.image_size}-pixel global crop"
            )
        self.student = VisionTransformer(config)
        self.head = DINOHead(
            config.embed_dim, s.n_prototypes, s.head_hidden_dim, s.head_bottleneck_dim, s.head_layers,
            s.head_batchnorm,
        )  # fmt: skip
        # The teacher has no stochastic depth (DINOv2 builds it without drop_path_rate).
        self.teacher = VisionTransformer(replace(config, drop_path=0.0)).requires_grad_(False)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("dino_center", torch.zeros(1, s.n_prototypes))
        self.register_buffer("ibot_center", torch.zeros(1, s.n_prototypes))

    def setup(self, stage: str) -> None:
        # Batch statistics of the head's BatchNorm (``head_batchnorm``) are those of the global
        # batch under DDP, as DINO converts its heads to SyncBatchNorm; the parameters stay the
        # same objects, so the optimiser, built after this hook, sees them. PyTorch's
        # SyncBatchNorm exists for CUDA only: several CPU processes would each normalise by their
        # own rows, another loss than one process's, so that is refused.
        if self.settings.head_batchnorm and self.trainer.world_size > 1:
            device = self.trainer.strategy.root_device.type  # the module is moved there after this hook
            if device != "cuda":
                raise ValueError(
                    "config key 'pretrain_dino.head_batchnorm': the head's BatchNorm needs the batch "
                    "statistics of all processes (SyncBatchNorm), which PyTorch provides on CUDA GPUs "
                    f"only; this run has {self.trainer.world_size} processes on {device}. "
                    "Set head_batchnorm: false or train on one process."
                )
            self.head = nn.SyncBatchNorm.convert_sync_batchnorm(self.head)
            self.teacher_head = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher_head)

    # --- views ---------------------------------------------------------------------------------

    def crops(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """(batch, 3, H, W) nanomaggies -> global views (2, batch, 3, G, G), local (n, batch, 3, l, l), RGB."""
        s, size = self.settings, self.student.config.image_size

        def view(crop: int, kind: int) -> torch.Tensor:
            spec = s.augmentations(kind)
            x = random_crop_flip(images, crop, generator)
            x = random_noise(random_blur(random_reddening(x, spec, generator), spec, generator), spec, generator)
            return viewer_rgb(x)

        global_views = torch.stack([view(size, 0), view(size, 1)])
        local_views = [view(s.local_crop, 2) for _ in range(s.local_crops)]
        return global_views, (torch.stack(local_views) if local_views else None)

    # --- schedules -----------------------------------------------------------------------------

    def _steps(self) -> tuple[int, float]:
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return total, total / max(1, self.settings.epochs)

    def teacher_temp_now(self) -> float:
        _, per_epoch = self._steps()
        return teacher_temperature(self.global_step / per_epoch, self.settings)

    def momentum_now(self, step: int | None = None) -> float:
        step = self.global_step if step is None else step
        return cosine_rise(step, self._steps()[0], self.settings.teacher_momentum, 1.0)

    def weight_decay_now(self) -> float:
        s = self.settings
        return cosine_rise(self.global_step, self._steps()[0], s.weight_decay, s.weight_decay_end)

    # --- the losses ----------------------------------------------------------------------------

    @torch.no_grad()
    def _update_center(self, center: torch.Tensor, logits: torch.Tensor) -> None:
        """centre <- m centre + (1 - m) mean of the teacher's logits over every rank's rows (an
        all-reduce of their sums and counts, so ranks with different numbers of rows weigh right)."""
        total = self._sum_over_ranks(logits.float().sum(dim=0, keepdim=True))
        count = self._sum_over_ranks(logits.new_full((), float(len(logits))))
        m = self.settings.center_momentum
        updated = m * center + (1.0 - m) * total / count.clamp_min(1.0)
        # no masked patch on any rank: nothing to average, the centre stays (decided on the GPU,
        # where an ``if count.item()`` would make the host wait for it every step)
        center.copy_(torch.where(count > 0, updated, center))

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce sum over the trainer's processes; the tensor itself outside a trainer (benchmarks)."""
        if self._trainer is None:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def losses(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        update_centers: bool = False,
        temperature: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """The losses of one batch of cutouts (nanomaggies): ``dino``, ``ibot``, ``koleo`` and their
        weighted sum ``loss``. ``temperature`` is the teacher's (default: its schedule's now)."""
        s = self.settings
        global_views, local_views = self.crops(images, generator)
        n_views, batch = global_views.shape[:2]
        flat = global_views.flatten(0, 1)
        grid = self.student.config.grid
        # The masks are drawn on the CPU, as DINOv2's collate does, and the masked patches' indices
        # found there: selecting them on the GPU with a boolean mask would make the host wait for it.
        masks = block_masks(len(flat), grid, s.mask_probability, s.mask_ratio, generator)
        masked = to_device(masks.flatten().nonzero().squeeze(1), flat.device)
        device_masks = to_device(masks, flat.device)
        temperature = self.teacher_temp_now() if temperature is None else temperature

        def masked_patches(tokens: torch.Tensor) -> torch.Tensor:
            """(images, 1 + patches, d) -> (masked patches, d), image by image, patch by patch."""
            return tokens[:, 1:].flatten(0, 1).index_select(0, masked)

        with torch.no_grad():
            teacher_tokens = self.teacher.forward_tokens(flat)
            teacher_cls = self.teacher_head(teacher_tokens[:, 0])
            teacher_patches = self.teacher_head(masked_patches(teacher_tokens))
            teacher_dino = teacher_probabilities(teacher_cls, self.dino_center, temperature)
            teacher_ibot = teacher_probabilities(teacher_patches, self.ibot_center, temperature)

        student_tokens = self.student.forward_tokens(flat, device_masks)
        student_cls = self.head(student_tokens[:, 0]).view(n_views, batch, -1)
        student_patches = self.head(masked_patches(student_tokens))
        if local_views is not None:
            local_cls = self.student.forward_tokens(local_views.flatten(0, 1))[:, 0]
            student_local = self.head(local_cls).view(len(local_views), batch, -1)
        else:
            student_local = student_cls.new_zeros(0, batch, s.n_prototypes)

        parts = {
            "dino": dino_loss(student_cls, student_local, teacher_dino.view(n_views, batch, -1), s.student_temp),
            "ibot": ibot_loss(student_patches, teacher_ibot, masks, s.student_temp),
            "koleo": sum(koleo_loss(c) for c in student_tokens[:, 0].view(n_views, batch, -1)),
        }
        parts["loss"] = parts["dino"] + s.ibot_weight * parts["ibot"] + s.koleo_weight * parts["koleo"]
        if update_centers:
            self._update_center(self.dino_center, teacher_cls)
            self._update_center(self.ibot_center, teacher_patches)
        return parts

    # --- Lightning hooks -----------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch["image"], update_centers=True)
        n = len(batch["image"])
        for name, value in parts.items():
            self.log(f"train_{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=n)
        schedules = {
            "teacher_temp": self.teacher_temp_now(),
            "teacher_momentum": self.momentum_now(),
            "weight_decay": self.weight_decay_now(),
        }
        for name, value in schedules.items():
            self.log(name, value, on_step=True, on_epoch=False, batch_size=n)
        return parts["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same crops and masks every epoch, and the centres are left alone, so epochs compare.
        parts = self.losses(batch["image"], torch.Generator().manual_seed(batch_idx))
        n = len(batch["image"])
        for name, value in parts.items():
            self.log(f"val_{name}", value, on_epoch=True, prog_bar=name == "loss", batch_size=n, sync_dist=True)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        weight_decay = self.weight_decay_now()
        for group in self.optimizers().optimizer.param_groups:
            group["weight_decay"] = weight_decay * group["wd_mult"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """After the optimiser step, the teacher follows with this step's momentum."""
        self.update_teacher(self.momentum_now(self.global_step - 1))  # global_step counts the step just taken

    @torch.no_grad()
    def update_teacher(self, m: float) -> None:
        """teacher <- m teacher + (1 - m) student, backbone and head."""
        pairs = [(self.teacher, self.student), (self.teacher_head, self.head)]
        for teacher, student in pairs:
            teacher_params = list(teacher.parameters())
            student_params = [p.detach() for p in student.parameters()]
            torch._foreach_mul_(teacher_params, m)
            torch._foreach_add_(teacher_params, student_params, alpha=1.0 - m)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # DINOv2 clips the backbone's and the head's gradients each to their own norm.
        if self.settings.gradient_clip:
            for module in (self.student, self.head):
                torch.nn.utils.clip_grad_norm_(module.parameters(), self.settings.gradient_clip)

    def configure_optimizers(self):
        s = self.settings
        total, per_epoch = self._steps()
        # the scaling rule of DINOv2's config: lr = base_lr * sqrt(global batch / 1024)
        world = self.trainer.world_size if self._trainer is not None else 1
        lr = s.lr * math.sqrt(s.batch_size * world / 1024)
        groups = parameter_groups(self.student, self.head, s)
        for group in groups:
            group["lr"] = lr * group["lr_mult"]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
        warmup = int(s.warmup_epochs * per_epoch)
        frozen = int(s.freeze_last_layer_epochs * per_epoch)
        min_ratio = s.min_lr / lr

        def factor(last_layer: bool):
            return lambda step: 0.0 if last_layer and step < frozen else warmup_cosine(step, warmup, total, min_ratio)

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["last_layer"]) for g in groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def image_encoder(self) -> ViTImageEncoder:
        """The teacher's backbone with its preprocessing: DINOv2 evaluates and publishes the teacher."""
        config = replace(self.teacher.config, drop_path=self.student.config.drop_path)
        encoder = ViTImageEncoder(config, config.image_size)
        encoder.backbone.load_state_dict(self.teacher.state_dict())
        return encoder.eval()


def pretrain_dino(
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
    """Train (or resume training) the ViT with DINOv2 and write the encoder file and the metrics table.

    ``model`` is the ``image_encoder:`` config block, ``settings`` the ``pretrain_dino:`` block;
    ``cpu_fallback`` as in ``require_gpus``; ``code_version`` as in ``pretrain_spectra``.
    """
    s = DinoSettings.from_config(settings)
    require_gpus(s.gpus, "pretrain_dino", cpu_fallback)
    require_full_batch(
        len(GalaxyDataset(train_path, fields=(), columns=())), s.batch_size, s.gpus, "pretrain_dino", train_path
    )
    config = vit_config_of(model)
    prepare_run_dir(
        run_dir,
        {
            "model": asdict(config),
            "settings": asdict(s),
            "inputs": input_fingerprint([train_path, val_path]),
            "code": code_version,
        },
    )
    train, val = image_loaders(train_path, val_path, s.batch_size, s.num_workers, config.image_size)
    seed_run(s.seed)
    module = DinoPretraining(asdict(config), asdict(s))
    # gradient clipping is the module's own (per module, configure_gradient_clipping)
    fit(module, train, val, run_dir, s.epochs, None, devices=max(1, s.gpus), callbacks=callbacks)
    save_image_encoder(module.image_encoder(), encoder_path, source="pretrain_dino (DINOv2)")
    write_metrics(run_dir, metrics_path)
