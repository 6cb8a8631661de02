"""The image encoder as the rest of the pipeline uses it: cutouts in nanomaggies -> features.

An ``ImageEncoder`` is a ResNet backbone plus the two steps every caller must repeat exactly as
the backbone was trained: the centre crop and Stein et al.'s scaling (``image_preprocessing``).
It is stored as a plain torch file ``{config, crop, head, state_dict, source}`` that loads without
Lightning, whether it came from our own MoCo v2 pretraining or from published weights.

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
from .image_preprocessing import stein_rgb
from .resnet import ResNet, ResNetConfig, mlp_head
from .torch_files import read_torch_file

log = logging.getLogger(__name__)

#: The prefix of the query encoder in a MoCo checkpoint (ours and Stein et al.'s).
QUERY_PREFIX = "encoder_q."


class ImageEncoder(nn.Module):
    """(batch, 3, H, W) grz cutouts in nanomaggies -> pooled features, or projections with ``project``."""

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


def image_encoder_payload(encoder: ImageEncoder, source: str) -> dict:
    """What an image-encoder file holds: enough to rebuild the network without this run's config."""
    return {
        "config": asdict(encoder.backbone.config),
        "crop": encoder.crop,
        "head": list(encoder.head_dims),
        "state_dict": encoder.backbone.state_dict(),
        "source": source,
    }


def image_encoder_from_payload(payload: dict, path: str | Path) -> ImageEncoder:
    for key in ("config", "crop", "head", "state_dict"):
        if key not in payload:
            raise KeyError(f"{path}: not an image-encoder file (no {key!r}); expected the output of pretrain_images")
    config = payload["config"]
    config = ResNetConfig(**{**config, "layers": tuple(config["layers"])})
    encoder = ImageEncoder(config, payload["crop"], payload["head"])
    encoder.backbone.load_state_dict(payload["state_dict"])
    return encoder.eval()


def save_image_encoder(encoder: ImageEncoder, path: str | Path, source: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(image_encoder_payload(encoder, source), tmp)


def load_image_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> ImageEncoder:
    return image_encoder_from_payload(read_torch_file(path, map_location), path)


def _read_checkpoint(path: str | Path) -> dict:
    """The tensors of a checkpoint file: a Lightning checkpoint's ``state_dict``, or a bare state dict."""
    try:
        payload = read_torch_file(path)
    except pickle.UnpicklingError:
        # Lightning checkpoints also pickle their hyper-parameters (an argparse Namespace for
        # Stein et al.'s), which the safe loader refuses. The user named this file in the config.
        log.warning("%s holds more than tensors; loading it with the full unpickler", path)
        payload = read_torch_file(path, weights_only=False)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a checkpoint with 'state_dict')")
    return state


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
    state = published_to_backbone(_read_checkpoint(checkpoint))
    if not state:
        raise KeyError(f"{checkpoint}: no keys start with {QUERY_PREFIX!r}; expected a MoCo v2 checkpoint")
    config = ResNetConfig.preset(preset)
    head = (config.feature_dim, projection_dim)
    encoder = ImageEncoder(config, crop, head)
    expected = encoder.backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{checkpoint}: does not match the {preset!r} ResNet with a {head} head.\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  wrong shapes ({len(wrong_shape)}): "
            + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_shape)
        )
    encoder.backbone.load_state_dict(state)
    save_image_encoder(encoder, output, source=f"published weights {checkpoint}")
    return encoder.eval()


@torch.no_grad()
def encode_images(encoder: ImageEncoder, images, batch_size: int = 256) -> "torch.Tensor":
    """Pooled features of many cutouts (an array or a lazily read HDF5 dataset), batch by batch."""
    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = [
        encoder(torch.as_tensor(images[start : start + batch_size], dtype=torch.float32, device=device)).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, encoder.feature_dim)
