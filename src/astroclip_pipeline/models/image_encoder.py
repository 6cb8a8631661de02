"""The image encoder as the rest of the pipeline uses it: cutouts in nanomaggies -> features.

An ``ImageEncoder`` is a ResNet backbone plus the two steps every caller must repeat exactly as
the backbone was trained: the centre crop and Stein et al.'s scaling (``image_preprocessing``).
A ``ViTImageEncoder`` is the same for AstroCLIP v2's vision transformer (``vit.py``), with the
Legacy Survey viewer's RGB mapping that AstroDINO was trained on; its features are the normalised
CLS token. Both are stored as a plain torch file ``{architecture, config, crop, state_dict,
source}`` (the ResNet's also with its projection ``head``) that loads without Lightning, whether it
came from our own pretraining (MoCo v2, DINOv2) or from published weights; a file without
``architecture`` is a ResNet's, as written before the ViT existed.

Published weights: the MoCo v2 ResNet-50 of Stein et al. (2021, georgestein/ssl-legacysurvey) is
a PyTorch Lightning checkpoint whose ``state_dict`` holds the query encoder under ``encoder_q.``
(a torchvision ResNet-50 whose ``fc`` is the projection head ``fc.0`` Linear(2048, 2048), ``fc.1``
ReLU, ``fc.2`` Linear(2048, 128)), the momentum encoder under ``encoder_k.`` and the negatives'
queues (``queue``, ``queue_ptr``, ``val_queue``, ``val_queue_ptr``). ``import_published`` keeps
``encoder_q.`` and nothing else.
"""

import logging
import pickle
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..data.augmentations import center_crop
from ..files import atomic_path
from .image_preprocessing import stein_rgb, viewer_rgb
from .resnet import ResNet, ResNetConfig, mlp_head
from .torch_files import read_checkpoint, read_torch_file
from .vit import VisionTransformer, ViTConfig, vit_config_of

log = logging.getLogger(__name__)

#: The prefix of the query encoder in a MoCo checkpoint (ours and Stein et al.'s).
QUERY_PREFIX = "encoder_q."


class ImageEncoder(nn.Module):
    """(batch, 3, H, W) grz cutouts in nanomaggies -> pooled features, or projections with ``project``."""

    architecture = "resnet"

    def __init__(self, config: ResNetConfig, crop: int, head: tuple[int, int] = (2048, 128)):
        super().__init__()
        self.crop = crop
        self.head_dims = tuple(head)
        self.backbone = ResNet(config)
        self.backbone.fc = mlp_head(self.backbone.feature_dim, *self.head_dims)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return stein_rgb(center_crop(images, self.crop))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (2048-d for ResNet-50), the representation Stein et al. study."""
        return self.backbone.features(self.preprocess(images))

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The MoCo projection head's output (128-d), on which the contrastive loss was computed."""
        return self.backbone(self.preprocess(images))


class ViTImageEncoder(nn.Module):
    """(batch, 3, H, W) grz cutouts in nanomaggies -> the ViT's normalised CLS token (batch, embed)."""

    architecture = "vit"

    def __init__(self, config: ViTConfig, crop: int, transpose: bool = False):
        """``transpose``: swap rows and columns first, as the official AstroCLIP v2 collator does
        (its ``permute(0, 3, 2, 1)`` of (N, H, W, C) images), for its published weights."""
        super().__init__()
        self.crop = crop
        self.transpose = transpose
        self.backbone = VisionTransformer(config)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            images = images.transpose(-2, -1)
        return viewer_rgb(center_crop(images, self.crop))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(images))

    def tokens(self, images: torch.Tensor, positioned: bool = True) -> torch.Tensor:
        """All normalised final tokens (batch, 1 + patches, embed), CLS first; or with
        ``positioned=False`` the patch tokens computed without CLS and positions (the official
        AstroCLIP v2 image head's input, ``VisionTransformer.forward_unpositioned_patches``)."""
        x = self.preprocess(images)
        return self.backbone.forward_tokens(x) if positioned else self.backbone.forward_unpositioned_patches(x)


def untrained_like(encoder: ImageEncoder | ViTImageEncoder) -> ImageEncoder | ViTImageEncoder:
    """A freshly initialised network of the same architecture, sizes and preprocessing (a baseline
    of what the architecture gives with random weights; seed torch's generator first)."""
    if encoder.architecture == "vit":
        return ViTImageEncoder(encoder.backbone.config, encoder.crop, encoder.transpose).eval()
    return ImageEncoder(encoder.backbone.config, encoder.crop, encoder.head_dims).eval()


def image_encoder_payload(encoder: ImageEncoder | ViTImageEncoder, source: str) -> dict:
    """What an image-encoder file holds: enough to rebuild the network without this run's config."""
    if encoder.architecture == "vit":
        return {
            "architecture": "vit",
            "config": asdict(encoder.backbone.config),
            "crop": encoder.crop,
            "transpose": encoder.transpose,
            "state_dict": encoder.backbone.state_dict(),
            "source": source,
        }
    return {
        "architecture": "resnet",
        "config": asdict(encoder.backbone.config),
        "crop": encoder.crop,
        "head": list(encoder.head_dims),
        "state_dict": encoder.backbone.state_dict(),
        "source": source,
    }


def image_encoder_from_payload(payload: dict, path: str | Path) -> ImageEncoder | ViTImageEncoder:
    architecture = payload.get("architecture", "resnet")
    if architecture not in ("resnet", "vit"):
        raise ValueError(f"{path}: unknown image-encoder architecture {architecture!r}; expected 'resnet' or 'vit'")
    for key in ("config", "crop", "state_dict") + (("head",) if architecture == "resnet" else ()):
        if key not in payload:
            raise KeyError(f"{path}: not an image-encoder file (no {key!r}); expected the output of pretrain_images")
    if architecture == "vit":
        encoder = ViTImageEncoder(ViTConfig(**payload["config"]), payload["crop"], payload.get("transpose", False))
        encoder.backbone.load_state_dict(payload["state_dict"])
        return encoder.eval()
    config = payload["config"]
    config = ResNetConfig(**{**config, "layers": tuple(config["layers"])})
    encoder = ImageEncoder(config, payload["crop"], payload["head"])
    encoder.backbone.load_state_dict(payload["state_dict"])
    return encoder.eval()


def save_image_encoder(encoder: ImageEncoder | ViTImageEncoder, path: str | Path, source: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(image_encoder_payload(encoder, source), tmp)


def load_image_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> ImageEncoder | ViTImageEncoder:
    return image_encoder_from_payload(read_torch_file(path, map_location), path)


def read_state_dict(path: str | Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: the state dict under ``key`` (a Lightning checkpoint's
    ``state_dict``, AstroDINO's ``teacher``), or a bare state dict."""
    try:
        payload = read_torch_file(path)
    except pickle.UnpicklingError:
        # Lightning checkpoints also pickle their hyper-parameters (an argparse Namespace for
        # Stein et al.'s), which the safe loader refuses; the tensors are read without building them.
        log.info("%s holds more than tensors; reading its tensors only", path)
        payload = read_checkpoint(path)
    state = payload.get(key, payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a checkpoint with {key!r})")
    return state


def require_same_keys(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Stop with the lists of missing, unexpected and mis-shaped keys unless ``state`` fits ``expected``
    exactly: a partially loaded network would silently give meaningless features."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{what}.\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  wrong shapes ({len(wrong_shape)}): "
            + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_shape)
        )


def published_to_backbone(state: dict[str, torch.Tensor], prefix: str = QUERY_PREFIX) -> dict[str, torch.Tensor]:
    """Map a MoCo checkpoint's keys onto our backbone's: keep ``encoder_q.*`` and drop the prefix."""
    return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}


def import_published(
    checkpoint: str | Path, output: str | Path, preset: str = "paper", crop: int = 96, projection_dim: int = 128
) -> ImageEncoder:
    """Load published MoCo v2 weights into our ResNet and write them as an image-encoder file.

    Every tensor of the backbone and its projection head must be present with the right shape, and
    nothing else may be under ``encoder_q.``: a mismatch stops with the lists of keys, since a
    partially loaded network would silently give meaningless features.
    """
    state = published_to_backbone(read_state_dict(checkpoint))
    if not state:
        raise KeyError(f"{checkpoint}: no keys start with {QUERY_PREFIX!r}; expected a MoCo v2 checkpoint")
    config = ResNetConfig.preset(preset)
    head = (config.feature_dim, projection_dim)
    encoder = ImageEncoder(config, crop, head)
    what = f"{checkpoint}: does not match the {preset!r} ResNet with a {head} head"
    require_same_keys(state, encoder.backbone.state_dict(), what)
    encoder.backbone.load_state_dict(state)
    save_image_encoder(encoder, output, source=f"published weights {checkpoint}")
    return encoder.eval()


@torch.no_grad()
def encode_images(encoder: ImageEncoder | ViTImageEncoder, images, batch_size: int = 256) -> "torch.Tensor":
    """Pooled features of many cutouts (an array or a lazily read HDF5 dataset), batch by batch."""
    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = [
        encoder(torch.as_tensor(images[start : start + batch_size], dtype=torch.float32, device=device)).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, encoder.feature_dim)


def import_weights(checkpoint: str | Path, output: str | Path, model: dict) -> ImageEncoder | ViTImageEncoder:
    """Published weights for the ``image_encoder:`` config block ``model``: Stein et al.'s MoCo v2
    ResNet-50 (``architecture: resnet``) or AstroDINO's ViT (``vit``, ``models/astrodino.py``)."""
    if model.get("architecture", "resnet") == "vit":
        # imported here: astrodino builds on this module's file format
        from .astrodino import import_astrodino

        return import_astrodino(checkpoint, output, vit_config_of(model))
    return import_published(checkpoint, output, preset=model["preset"], crop=model["crop"])


def write_random_vit(output: str | Path, model: dict, seed: int) -> ViTImageEncoder:
    """The ViT of the ``image_encoder:`` config block ``model`` with DINOv2's initialisation and no
    training (seeded by ``seed``), written as an image-encoder file: the baseline of what the
    architecture and the pixel scaling give for free."""
    config = vit_config_of(model)
    torch.manual_seed(seed)
    encoder = ViTImageEncoder(config, config.image_size).eval()
    save_image_encoder(encoder, output, source=f"random weights (seed {seed})")
    return encoder
