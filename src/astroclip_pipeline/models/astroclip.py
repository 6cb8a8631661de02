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

AstroCLIP v2 (Parker et al. 2024) has a ViT image backbone (``vit.py``) and 1024-d embeddings: its
image head is a cross-attention block like the spectrum head's (a learned query, 4 heads, then the
MLP), over the ViT's final tokens. Which tokens (``image_tokens``):

- ``all`` (our default): the tokens the ViT computes, the CLS token and the patches, with the
  positions it was pretrained with. The frozen blocks never saw an input without positions;
  without them they run out of the distribution they were trained on, and the head cannot tell
  the galaxy at the centre from a neighbour at the edge.
- ``patches``: what the official code feeds its ``ImageHead`` (``patch_embed -> blocks -> norm``,
  calling the modules one by one and so skipping the CLS token and the positional embeddings,
  most likely by accident); kept to reproduce it. The official image head also has no residual
  around its MLP where the spectrum head has one; ours is the same block on both sides.

``heads="official"`` reproduces the official arrangement of both heads, for its published weights
(``published.py``); their preprocessing belongs to the encoders (``SpecFormer.preprocessing``,
``ViTImageEncoder.transpose``).

An ``AstroCLIP`` is saved as a plain torch file ``{image_encoder, spectrum_encoder, spectrum_head,
embed_dim, n_heads, settings, heads}`` (with a ViT also ``image_head`` and ``image_tokens``; a file
without ``heads`` has the project's) that loads without Lightning (``load_astroclip``).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path
from .image_encoder import ImageEncoder, ViTImageEncoder, image_encoder_from_payload, image_encoder_payload
from .specformer import SpecFormer, SpecFormerConfig
from .torch_files import read_torch_file

#: How a head arranges its parts: ours, or as the official AstroCLIP v2 code has them.
HEAD_LAYOUTS = ("project", "official")


class CrossAttentionHead(nn.Module):
    """Hidden states (batch, tokens, in_dim) -> one embedding (batch, dim).

    ``layout="project"``: x = attention(query, hidden); out = x + MLP(LayerNorm(x)), the
    pre-LayerNorm residual of a transformer block. ``layout="official"``: as the official code's
    ``CrossAttentionHead`` then ``MLP`` (PolymathicAI/AstroCLIP ``astroclip/modules.py`` and
    ``models/astroclip.py``): x = LayerNorm(attention(query, hidden)); out = x + MLP(x) for its
    spectrum head, MLP(x) for its image head (``residual=False``). Same parameters either way.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 128,
        n_heads: int = 4,
        dropout: float = 0.0,
        layout: str = "project",
        residual: bool = True,
    ):
        super().__init__()
        if layout not in HEAD_LAYOUTS:
            raise ValueError(f"head layout {layout!r} is not one of {HEAD_LAYOUTS}")
        self.layout = layout
        self.residual = residual
        self.query = nn.Parameter(torch.randn(1, 1, dim) / dim**0.5)
        self.attention = nn.MultiheadAttention(dim, n_heads, kdim=in_dim, vdim=in_dim, batch_first=True)
        self.layernorm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(len(hidden), -1, -1)
        x, _ = self.attention(query, hidden, hidden, need_weights=False)
        if self.layout == "official":
            x = self.layernorm(x)
            x = x + self.mlp(x) if self.residual else self.mlp(x)
        else:
            x = x + self.mlp(self.layernorm(x)) if self.residual else self.mlp(self.layernorm(x))
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


IMAGE_TOKENS = ("all", "patches")


class AstroCLIP(nn.Module):
    def __init__(
        self,
        image_encoder: ImageEncoder | ViTImageEncoder,
        spectrum_encoder: SpecFormer,
        embed_dim: int = 128,
        n_heads: int = 4,
        image_tokens: str = "all",
        heads: str = "project",
    ):
        """``heads``: the heads' ``layout`` (``CrossAttentionHead``); "official" also drops the
        residual of the image head, as the official code has it."""
        super().__init__()
        if heads not in HEAD_LAYOUTS:
            raise ValueError(f"AstroCLIP heads={heads!r} is not one of {HEAD_LAYOUTS}")
        self.heads = heads
        self.image_encoder = image_encoder
        self.spectrum_encoder = spectrum_encoder
        if image_tokens not in IMAGE_TOKENS:
            raise ValueError(f"config key 'align.image_tokens': {image_tokens!r} is not one of {IMAGE_TOKENS}")
        self.image_tokens = image_tokens
        if image_encoder.architecture == "vit":
            self.image_cross_attention = CrossAttentionHead(
                image_encoder.feature_dim, embed_dim, n_heads, layout=heads, residual=heads != "official"
            )
        elif image_encoder.head_dims[-1] != embed_dim:
            raise ValueError(
                f"the image encoder's projection head gives {image_encoder.head_dims[-1]}-d vectors, "
                f"expected the embedding width {embed_dim} (config key 'align.embed_dim')"
            )
        elif heads == "official":
            raise ValueError("the official heads need a ViT image encoder (AstroCLIP v2)")
        self.spectrum_head = CrossAttentionHead(spectrum_encoder.config.embed_dim, embed_dim, n_heads, layout=heads)

    @property
    def image_head(self) -> nn.Module:
        """The trained image head: the cross-attention block (ViT) or the ResNet's dense layers."""
        if self.image_encoder.architecture == "vit":
            return self.image_cross_attention
        return self.image_encoder.backbone.fc

    def image_head_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the frozen image backbone hands the head: pooled features (batch, features) of a
        ResNet, the final tokens (batch, tokens, embed) of a ViT (see ``image_tokens``)."""
        if self.image_encoder.architecture == "vit":
            return self.image_encoder.tokens(images, positioned=self.image_tokens == "all")
        return self.image_encoder(images)

    def image_head_input_size(self) -> int:
        """Numbers per image in ``image_head_input``'s output (what a cache of it costs)."""
        encoder = self.image_encoder
        if encoder.architecture == "vit":
            patches = (encoder.crop // encoder.backbone.config.patch_size) ** 2
            return (patches + (self.image_tokens == "all")) * encoder.feature_dim
        return encoder.feature_dim

    def image_embedding(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None):
        """Unnormalised embeddings from cutouts in nanomaggies, or from ``image_head_input``'s output."""
        if features is None:
            features = self.image_head_input(images)
        return self.image_head(features)

    def spectrum_hidden(self, spectrum: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.spectrum_encoder(self.spectrum_encoder.tokens(spectrum, ivar))
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
            "preprocessing": model.spectrum_encoder.preprocessing,
        },
        "spectrum_head": model.spectrum_head.state_dict(),
        "embed_dim": model.spectrum_head.query.shape[-1],
        "n_heads": model.spectrum_head.attention.num_heads,
        "settings": settings,
        "heads": model.heads,
    }
    if model.image_encoder.architecture == "vit":
        payload |= {"image_head": model.image_head.state_dict(), "image_tokens": model.image_tokens}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_astroclip(path: str | Path, map_location: str | torch.device = "cpu") -> AstroCLIP:
    payload = read_torch_file(path, map_location)
    for key in ("image_encoder", "spectrum_encoder", "spectrum_head", "embed_dim", "n_heads"):
        if key not in payload:
            raise KeyError(f"{path}: not an AstroCLIP model file (no {key!r}); expected the output of the align rule")
    spectrum = payload["spectrum_encoder"]
    spectrum_encoder = SpecFormer(SpecFormerConfig(**spectrum["config"]), spectrum.get("preprocessing", "project"))
    spectrum_encoder.load_state_dict(spectrum["state_dict"])
    model = AstroCLIP(
        image_encoder_from_payload(payload["image_encoder"], path),
        spectrum_encoder,
        payload["embed_dim"],
        payload["n_heads"],
        payload.get("image_tokens", "all"),
        payload.get("heads", "project"),
    )
    model.spectrum_head.load_state_dict(payload["spectrum_head"])
    if model.image_encoder.architecture == "vit":
        if "image_head" not in payload:
            raise KeyError(f"{path}: a ViT image encoder but no 'image_head'; expected the output of the align rule")
        model.image_head.load_state_dict(payload["image_head"])
    return model.eval()
