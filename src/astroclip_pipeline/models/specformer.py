"""The spectrum transformer of AstroCLIP v1 ("specformer"): a GPT-2-like encoder over spectrum segments.

A spectrum is Z-scored on its own (mean and standard deviation over its good pixels), cut into
segments of 20 pixels that overlap by 10, and each segment becomes a 22-wide token (two leading
feature columns, zero for segments); a first token carries the mean and standard deviation, so
nothing about the spectrum's amplitude is lost. The transformer is a stack of pre-LayerNorm blocks
with learned absolute positions, bidirectional attention and a GELU MLP; a linear head maps each
hidden state back to a 22-wide token, which masked-segment pretraining asks it to fill in. The
block is the one the image ViT uses too (``transformer.py``), without LayerScale and drop path.

Read top to bottom, in the spirit of nanoGPT's ``model.py``.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path
from .torch_files import read_torch_file
from .transformer import Block

PATCH_SIZE = 20
PATCH_STRIDE = 10
N_FEATURE_COLUMNS = 2
TOKEN_WIDTH = PATCH_SIZE + N_FEATURE_COLUMNS
#: The official code clips each spectrum's std below at 0.2 so that flat, faint spectra are not blown up.
MIN_STD = 0.2


@dataclass(frozen=True)
class SpecFormerConfig:
    embed_dim: int = 768
    n_layers: int = 6
    n_heads: int = 6
    max_len: int = 800
    dropout: float = 0.0

    @classmethod
    def preset(cls, name: str, **overrides) -> "SpecFormerConfig":
        presets = {
            "paper": cls(embed_dim=768, n_layers=6, n_heads=6, max_len=800),
            # Small enough that the default run pretrains in a few minutes on two CPU cores.
            "laptop": cls(embed_dim=64, n_layers=4, n_heads=4, max_len=800),
        }
        if name not in presets:
            raise ValueError(f"unknown specformer preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**asdict(presets[name]), **overrides})


def n_tokens(n_pixels: int) -> int:
    """Tokens for a spectrum of ``n_pixels``: one statistics token plus the full segments (the
    last, short segment is dropped as in the official code): 778 for DESI's 7781 pixels."""
    if n_pixels < PATCH_SIZE:
        raise ValueError(f"a spectrum needs at least {PATCH_SIZE} pixels, got {n_pixels}")
    return 1 + (n_pixels - PATCH_SIZE) // PATCH_STRIDE + 1


def standardise(flux: torch.Tensor, ivar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-score each spectrum over its good pixels (ivar > 0); masked pixels become 0.

    Returns (standardised flux, mean, std), mean and std of shape (batch, 1). Pixels the survey
    masked carry no information (DESI sets their flux to 0), so they must not pull the mean or std.
    """
    good = (ivar > 0).to(flux.dtype)
    n_good = good.sum(dim=-1, keepdim=True).clamp_min(1.0)
    mean = (flux * good).sum(dim=-1, keepdim=True) / n_good
    var = (((flux - mean) * good) ** 2).sum(dim=-1, keepdim=True) / n_good
    std = var.sqrt().clamp_min(MIN_STD)
    return (flux - mean) / std * good, mean, std


def segment_tokens(pixels: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
    """Any per-pixel quantity (batch, n_pixels) laid out as tokens (batch, n_tokens, 22): segment
    token t + 1 holds pixels 10 t to 10 t + 19 in its last 20 columns (so a pixel covered by two
    segments appears in both); the statistics token and the segments' two feature columns hold
    ``fill``. Flux, pixel validity, loss weights and noise variances share this layout."""
    segments = pixels.unfold(-1, PATCH_SIZE, PATCH_STRIDE)  # (batch, n_segments, 20)
    tokens = pixels.new_full((segments.shape[0], segments.shape[1] + 1, TOKEN_WIDTH), fill)
    tokens[:, 1:, N_FEATURE_COLUMNS:] = segments
    return tokens


def tokens_from_standardised(standard: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Standardised spectra (batch, n_pixels) and their statistics -> tokens (batch, n_tokens, 22)."""
    tokens = segment_tokens(standard)
    tokens[:, 0, 0] = (mean[:, 0] - 2.0) / 2.0
    tokens[:, 0, 1] = (std[:, 0] - 2.0) / 8.0
    return tokens


def official_tokenize(flux: torch.Tensor) -> torch.Tensor:
    """(batch, n_pixels) spectra -> tokens (batch, n_tokens, 22) exactly as the official
    ``SpecFormer.preprocess`` (PolymathicAI/AstroCLIP ``astroclip/models/specformer.py``) makes them
    for its published weights: mean and standard deviation over every pixel (torch's default
    unbiased std, clipped below at 0.2), no pixel masked; ``tokenize`` is the ivar-aware form."""
    mean = flux.mean(dim=-1, keepdim=True)
    std = flux.std(dim=-1, keepdim=True).clamp_min(MIN_STD)
    return tokens_from_standardised((flux - mean) / std, mean, std)


def tokenize(flux: torch.Tensor, ivar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, n_pixels) spectra -> tokens (batch, n_tokens, 22) and pixel validity of the same shape.

    The validity says which token entries are real data (a good pixel, or the statistics token's two
    values); the loss uses it so that masked pixels are never targets.
    """
    standard, mean, std = standardise(flux, ivar)
    tokens = tokens_from_standardised(standard, mean, std)
    valid = segment_tokens(ivar > 0, False)
    valid[:, 0, :N_FEATURE_COLUMNS] = True
    return tokens, valid


def detokenize(tokens: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """Tokens back to a standardised spectrum, averaging the two segments that cover each pixel."""
    patches = tokens[:, 1:, N_FEATURE_COLUMNS:].transpose(1, 2)  # (batch, 20, n_patches)
    n_covered = PATCH_STRIDE * (patches.shape[-1] - 1) + PATCH_SIZE
    fold = dict(output_size=(1, n_covered), kernel_size=(1, PATCH_SIZE), stride=(1, PATCH_STRIDE))
    summed = F.fold(patches, **fold)[:, 0, 0]
    counts = F.fold(torch.ones_like(patches), **fold)[:, 0, 0]
    out = tokens.new_full((tokens.shape[0], n_pixels), float("nan"))
    out[:, :n_covered] = summed / counts
    return out


#: How spectra become tokens: ``tokenize`` (ours, ivar-aware) or ``official_tokenize`` (the
#: official code's, which its published weights expect).
PREPROCESSING = ("project", "official")


class SpecFormer(nn.Module):
    """Tokens (batch, n_tokens, 22) -> hidden states (batch, n_tokens, embed) and reconstructions.

    ``preprocessing`` says how this model's spectra are tokenized (``PREPROCESSING``, ``tokens``)."""

    def __init__(self, config: SpecFormerConfig, preprocessing: str = "project"):
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"spectrum preprocessing {preprocessing!r} is not one of {PREPROCESSING}")
        self.config = config
        self.preprocessing = preprocessing
        self.embed = nn.Linear(TOKEN_WIDTH, config.embed_dim)
        self.position = nn.Parameter(torch.zeros(config.max_len, config.embed_dim))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.ln_final = nn.LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, TOKEN_WIDTH)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: every linear weight ~ N(0, (2 fan_in n_layers)^-1/2), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = 1.0 / math.sqrt(2.0 * module.in_features * self.config.n_layers)
                nn.init.normal_(module.weight, mean=0.0, std=std)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position, mean=0.0, std=0.02)

    def tokens(self, flux: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
        """(batch, n_pixels) flux and ivar -> this model's input tokens (batch, n_tokens, 22)."""
        if self.preprocessing == "official":
            return official_tokenize(flux)
        return tokenize(flux, ivar)[0]

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = tokens.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"{length} tokens exceed max_len {self.config.max_len} of this SpecFormer")
        x = self.dropout(self.embed(tokens) + self.position[:length])
        for block in self.blocks:
            x = block(x)
        hidden = self.ln_final(x)
        return hidden, self.head(hidden)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_encoder(model: SpecFormer, path: str | Path) -> None:
    """The transformer as a plain torch file: its config and weights, no Lightning needed."""
    payload = {"config": asdict(model.config), "state_dict": model.state_dict(), "preprocessing": model.preprocessing}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> SpecFormer:
    payload = read_torch_file(path, map_location)
    for key in ("config", "state_dict"):
        if key not in payload:
            raise KeyError(f"{path}: not a spectrum-encoder file (no {key!r}); expected the output of pretrain_spectra")
    # a file without "preprocessing" was written before published weights were read: ours
    model = SpecFormer(SpecFormerConfig(**payload["config"]), payload.get("preprocessing", "project"))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
