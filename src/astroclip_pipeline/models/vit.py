"""The image encoder of AstroCLIP v2 ("AstroDINO"): a vision transformer (ViT, Dosovitskiy et al. 2021)
as DINOv2 builds it (Oquab et al. 2023, facebookresearch/dinov2, ``dinov2/models/vision_transformer.py``).

An RGB crop (batch, 3, H, W) is cut into non-overlapping patches of ``patch_size`` pixels, each
patch becomes a token by one linear map (a strided convolution), a learned CLS token is put in
front, and learned absolute positions are added. The positions are made for ``image_size``
crops; a crop of another size (DINOv2's small "local" crops, or a cutout of another survey) gets
them resampled bicubically over the patch grid, as DINOv2 does. Then pre-LayerNorm blocks with
LayerScale and stochastic depth (``transformer.Block``, the spectrum transformer's block) and a
final LayerNorm. The image embedding is the normalised CLS token; the normalised patch tokens
are what iBOT's masked-patch loss and the alignment's cross-attention head read.

For iBOT, a patch the student must not see is replaced by a learned ``mask_token`` before the
positions are added. The module names follow DINOv2's where they are the ViT's own
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``mask_token``, ``blocks``, ``norm``), so
that published weights map onto it with a short key map (``models/astrodino.py``).

Read top to bottom, in the spirit of nanoGPT's ``model.py``.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Block

#: DINOv2's LayerNorm epsilon (``partial(nn.LayerNorm, eps=1e-6)``), which its weights were trained with.
NORM_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 144  # the crop the learned positions are made for (pixels)
    patch_size: int = 12
    in_channels: int = 3
    embed_dim: int = 1024
    depth: int = 24
    n_heads: int = 16
    mlp_ratio: float = 4.0
    layerscale: float | None = 1e-5  # initial LayerScale; None for none
    drop_path: float = 0.3  # the same rate in every block (DINOv2's drop_path_uniform)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ViTConfig":
        presets = {
            # AstroDINO: DINOv2's ViT-L with 12-pixel patches on 144-pixel crops, 12 x 12 patches.
            "paper": cls(),
            # Pretrains in minutes on two CPU cores: 48-pixel crops of the mock survey's 64-pixel
            # cutouts (the laptop ResNet's crop), 8-pixel patches (6 x 6), 4 blocks of width 96.
            "laptop": cls(image_size=48, patch_size=8, embed_dim=96, depth=4, n_heads=4, drop_path=0.1),
        }
        if name not in presets:
            raise ValueError(f"unknown ViT preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**asdict(presets[name]), **overrides})

    @property
    def grid(self) -> int:
        """Patches along each side of an ``image_size`` crop."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return self.image_size // self.patch_size


def vit_config_of(block: dict) -> ViTConfig:
    """The ``image_encoder:`` config block -> the ViT's config: the preset, made for ``crop``-pixel
    crops, with the sizes of ``vit:`` (patch_size, embed_dim, depth, n_heads, drop_path) where given."""
    sizes = {key: value for key, value in (block.get("vit") or {}).items() if value is not None}
    return ViTConfig.preset(block["preset"], image_size=int(block["crop"]), **sizes)


class PatchEmbedding(nn.Module):
    """(batch, channels, H, W) -> (batch, H/p * W/p, embed): one linear map per p x p patch, row by row."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(config.in_channels, config.embed_dim, config.patch_size, stride=config.patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"a {h}x{w} crop is not a whole number of {self.patch_size}-pixel patches")
        return self.proj(images).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """RGB crops (batch, 3, H, W) -> normalised tokens (batch, 1 + patches, embed); CLS first."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid**2, config.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, config.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                config.embed_dim,
                config.n_heads,
                mlp_ratio=config.mlp_ratio,
                layerscale=config.layerscale,
                drop_path=config.drop_path,
                norm_eps=NORM_EPS,
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=NORM_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2's initialisation: positions and linear weights ~ truncated N(0, 0.02), biases 0,
        the CLS token ~ N(0, 1e-6), the mask token 0, the patch embedding PyTorch's default."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def feature_dim(self) -> int:
        return self.config.embed_dim

    def positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positions (1, 1 + grid_h * grid_w, embed) for a crop of grid_h x grid_w patches.

        The patch positions are a learned image of grid x grid; another grid resamples it
        bicubically (DINOv2's ``interpolate_pos_encoding``); the CLS position is kept as it is.
        """
        grid = self.config.grid
        if (grid_h, grid_w) == (grid, grid):
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        image = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        image = F.interpolate(image.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        patches = image.to(patches.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([cls, patches], dim=1)

    def embed(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens before the blocks: (batch, 1 + patches, embed).

        ``masks`` (batch, patches), True where the patch is hidden (iBOT): those tokens become
        ``mask_token`` before the positions are added, so the network knows where they were.
        """
        h, w = images.shape[-2:]
        x = self.patch_embed(images)
        if masks is not None:
            x = torch.where(masks[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return x + self.positions(h // self.config.patch_size, w // self.config.patch_size)

    def forward_tokens(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised final tokens (batch, 1 + patches, embed): CLS at 0, then patches row by row."""
        x = self.embed(images, masks)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_unpositioned_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised patch tokens (batch, patches, embed) of ``patch_embed -> blocks -> norm``: no
        CLS token, no positions. AstroCLIP v2's official image head reads these (its ``ImageHead``
        calls the modules one by one); kept to reproduce it, see ``models/astroclip.py``."""
        x = self.patch_embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The image embedding: the normalised CLS token (batch, embed), as AstroDINO's downstream uses."""
        return self.forward_tokens(images)[:, 0]

    @torch.no_grad()
    def last_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's self-attention of the CLS token over the patches, per head:
        (batch, heads, grid_h, grid_w), each head's map summing to at most 1 (the rest is on CLS)."""
        x = self.embed(images)
        for block in self.blocks[:-1]:
            x = block(x)
        last = self.blocks[-1]
        weights = last.attn.attention_weights(last.ln_attn(x))[:, :, 0, 1:]
        h, w = (s // self.config.patch_size for s in images.shape[-2:])
        return weights.reshape(*weights.shape[:2], h, w)


def count_parameters(config: ViTConfig) -> int:
    """Parameters of a ViT of ``config``, counted on the meta device: no weights are allocated or
    initialised, so the paper's 300M-parameter model is counted without 1.2 GB of memory."""
    with torch.device("meta"):
        model = VisionTransformer(config)
    return sum(p.numel() for p in model.parameters())


def flops_per_image(config: ViTConfig, crop: int | None = None, block_rows: float = 1.0) -> float:
    """Forward-pass FLOPs of one crop (2 per multiply-add), the matrix products only.

    ``block_rows``: the share of the batch the blocks' branches compute, 1 - drop_path for a
    student in training whose drop path skips whole rows (``transformer.add_residual_on_subset``).

    Per block and token: 2 * (4 d^2 for q, k, v and the projection + 2 r d^2 for the MLP), plus
    attention's two (tokens x tokens x d) products, 2 * 2 n d per token; the patch embedding is
    2 * 3 p^2 d per patch. This is the standard count of Kaplan et al. (2020) and PaLM's MFU
    appendix (Chowdhery et al. 2022), without LayerNorm, softmax and GELU (a few percent).
    Training (forward and backward) costs three times the forward.
    """
    crop = crop or config.image_size
    d, p = config.embed_dim, config.patch_size
    patches = (crop // p) ** 2
    n = patches + 1
    per_token = 2 * (4 * d * d + 2 * config.mlp_ratio * d * d) + 2 * 2 * n * d
    return block_rows * config.depth * n * per_token + 2 * 3 * p * p * d * patches


def n_patch_tokens(config: ViTConfig, crop: int) -> int:
    """Patch tokens of a square crop of ``crop`` pixels."""
    if crop % config.patch_size:
        raise ValueError(f"crop {crop} is not a multiple of the ViT's patch size {config.patch_size}")
    return (crop // config.patch_size) ** 2

