"""AstroCLIP v1: a frozen spectrum transformer and a frozen image backbone, each with a small
trainable head that maps it into one shared 128-d embedding space.

- Spectrum head (as in the paper and the official code): one cross-attention block in which a
  single learnable query of width 128 attends (4 heads) over all of the transformer's hidden
  states, then a residual MLP; this pools a variable-length sequence into one vector while
  letting the head choose which wavelengths matter.
- Image head: the dense layers on top of the ResNet's pooled features, i.e. the MoCo v2 projection
  MLP (2048 -> 2048 -> 128 for ResNet-50), starting from its pretrained weights and fine-tuned.

Which backbone parameters train as well is configurable (``image_trainable``,
``spectrum_trainable``: lists of parameter-name prefixes); the heads always train.

An ``AstroCLIP`` is saved as a plain torch file ``{image_encoder, spectrum_encoder, spectrum_head,
image_head_dims, settings}`` that loads without Lightning (``load_astroclip``).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path
from .image_encoder import ImageEncoder, image_encoder_from_payload, image_encoder_payload
from .specformer import SpecFormer, SpecFormerConfig, tokenize
from .torch_files import read_torch_file


class CrossAttentionHead(nn.Module):
    """Hidden states (batch, tokens, in_dim) -> one embedding (batch, dim)."""

    def __init__(self, in_dim: int, dim: int = 128, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) / dim**0.5)
        self.attention = nn.MultiheadAttention(dim, n_heads, kdim=in_dim, vdim=in_dim, batch_first=True)
        self.layernorm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(len(hidden), -1, -1)
        x, _ = self.attention(query, hidden, hidden, need_weights=False)
        x = x + self.mlp(self.layernorm(x))
        return x[:, 0]


def set_trainable(module: nn.Module, prefixes: list[str] | tuple[str, ...], name: str) -> None:
    """Freeze ``module`` except the parameters whose names start with one of ``prefixes``."""
    names = [n for n, _ in module.named_parameters()]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        roots = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"config key '{name}': {unknown} name no parameters of the backbone; its modules are {roots}")
    for n, parameter in module.named_parameters():
        parameter.requires_grad_(any(n.startswith(p) for p in prefixes))


class AstroCLIP(nn.Module):
    def __init__(
        self, image_encoder: ImageEncoder, spectrum_encoder: SpecFormer, embed_dim: int = 128, n_heads: int = 4
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.spectrum_encoder = spectrum_encoder
        if image_encoder.head_dims[-1] != embed_dim:
            raise ValueError(
                f"the image encoder's projection head gives {image_encoder.head_dims[-1]}-d vectors, "
                f"expected the embedding width {embed_dim}"
            )
        self.spectrum_head = CrossAttentionHead(spectrum_encoder.config.embed_dim, embed_dim, n_heads)

    @property
    def image_head(self) -> nn.Module:
        return self.image_encoder.backbone.fc

    def image_embedding(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None):
        """Unnormalised embeddings from cutouts in nanomaggies, or from the backbone's pooled features."""
        if features is None:
            features = self.image_encoder(images)
        return self.image_head(features)

    def spectrum_hidden(self, spectrum: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
        tokens, _ = tokenize(spectrum, ivar)
        hidden, _ = self.spectrum_encoder(tokens)
        return hidden

    def spectrum_embedding(self, spectrum=None, ivar=None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised embeddings from flux and ivar, or from the transformer's hidden states."""
        if hidden is None:
            hidden = self.spectrum_hidden(spectrum, ivar)
        return self.spectrum_head(hidden)

    @torch.no_grad()
    def embed(
        self, images: torch.Tensor, spectrum: torch.Tensor, ivar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image, spectrum) embeddings, as the evaluation uses them."""
        return (
            F.normalize(self.image_embedding(images).float(), dim=-1),
            F.normalize(self.spectrum_embedding(spectrum, ivar).float(), dim=-1),
        )


def save_astroclip(model: AstroCLIP, path: str | Path, settings: dict) -> None:
    payload = {
        "image_encoder": image_encoder_payload(model.image_encoder, source="align"),
        "spectrum_encoder": {
            "config": vars(model.spectrum_encoder.config).copy(),
            "state_dict": model.spectrum_encoder.state_dict(),
        },
        "spectrum_head": model.spectrum_head.state_dict(),
        "embed_dim": model.spectrum_head.query.shape[-1],
        "n_heads": model.spectrum_head.attention.num_heads,
        "settings": settings,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_astroclip(path: str | Path, map_location: str | torch.device = "cpu") -> AstroCLIP:
    payload = read_torch_file(path, map_location)
    for key in ("image_encoder", "spectrum_encoder", "spectrum_head", "embed_dim", "n_heads"):
        if key not in payload:
            raise KeyError(f"{path}: not an AstroCLIP model file (no {key!r}); expected the output of the align rule")
    spectrum_encoder = SpecFormer(SpecFormerConfig(**payload["spectrum_encoder"]["config"]))
    spectrum_encoder.load_state_dict(payload["spectrum_encoder"]["state_dict"])
    model = AstroCLIP(
        image_encoder_from_payload(payload["image_encoder"], path),
        spectrum_encoder,
        payload["embed_dim"],
        payload["n_heads"],
    )
    model.spectrum_head.load_state_dict(payload["spectrum_head"])
    return model.eval()
