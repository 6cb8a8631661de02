"""Synthetic checkpoints in the layout of the published AstroCLIP v2 files (PolymathicAI/AstroCLIP:
``astroclip/models/specformer.py``, ``models/astroclip.py``, ``modules.py``) at small widths that
follow the official rules (token width 22, MLPs 4x, image-head kdim = the ViT width, spectrum-head
kdim = the SpecFormer width), and forwards written out from the official modules' definitions.

``write_lightning_checkpoint`` pickles, beside the tensors, objects of classes from modules named
like the official ones (``astroclip.models.astroclip``, ``dinov2.models``), registered only while
saving: a loader that imported them would fail, one that ran them would print.
"""

import collections
import contextlib
import math
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

from astroclip_pipeline.models.vit import ViTConfig

from .test_astrodino import astrodino_checkpoint, dinov2_forward

TOKEN_WIDTH = 22


def specformer_state(width=16, layers=2, max_len=120, seed=0) -> dict[str, torch.Tensor]:
    """The official SpecFormer's state dict (names, shapes) with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    state = {
        "data_embed.weight": r(width, TOKEN_WIDTH), "data_embed.bias": r(width),
        "position_embed.weight": r(max_len, width),
        "final_layernorm.weight": r(width, offset=1.0), "final_layernorm.bias": r(width),
        "head.weight": r(TOKEN_WIDTH, width), "head.bias": r(TOKEN_WIDTH),
    }  # fmt: skip
    for i in range(layers):
        b = f"blocks.{i}."
        state |= {
            b + "layernorm1.weight": r(width, offset=1.0), b + "layernorm1.bias": r(width),
            b + "attention.attention.weight": r(3 * width, width), b + "attention.attention.bias": r(3 * width),
            b + "attention.projection.weight": r(width, width), b + "attention.projection.bias": r(width),
            b + "layernorm2.weight": r(width, offset=1.0), b + "layernorm2.bias": r(width),
            b + "mlp.encoder.weight": r(4 * width, width), b + "mlp.encoder.bias": r(4 * width),
            b + "mlp.decoder.weight": r(width, 4 * width), b + "mlp.decoder.bias": r(width),
        }  # fmt: skip
    return state


def official_preprocess(spectra: np.ndarray) -> np.ndarray:
    """SpecFormer.preprocess in numpy: (batch, pixels) -> (batch, tokens, 22): z-score with the
    sample std (ddof 1) clipped at 0.2, slices of 20 every 10 (a short last one dropped), two
    zero columns in front, a first token holding (mean - 2) / 2 and (std - 2) / 8."""
    x = np.asarray(spectra, np.float64)
    mean, std = x.mean(1, keepdims=True), np.maximum(x.std(1, ddof=1, keepdims=True), 0.2)
    x = (x - mean) / std
    starts = [s for s in range(0, x.shape[1] - 10, 10) if s + 20 <= x.shape[1]]
    out = np.zeros((len(x), 1 + len(starts), TOKEN_WIDTH))
    for k, s in enumerate(starts):
        out[:, 1 + k, 2:] = x[:, s : s + 20]
    out[:, 0, 0], out[:, 0, 1] = (mean[:, 0] - 2) / 2, (std[:, 0] - 2) / 8
    return out


def specformer_forward(state: dict, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """The official SpecFormer's embedding (the final LayerNorm's output) from its definitions."""
    x = F.linear(tokens, state["data_embed.weight"], state["data_embed.bias"])
    x = x + state["position_embed.weight"][: tokens.shape[1]]
    batch, length, width = x.shape
    n_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(n_layers):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (width,), state[p + "layernorm1.weight"], state[p + "layernorm1.bias"])
        q, k, v = F.linear(h, state[p + "attention.attention.weight"], state[p + "attention.attention.bias"]).split(
            width, dim=2
        )
        q, k, v = (t.view(batch, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1)
        h = (att @ v).transpose(1, 2).reshape(batch, length, width)
        x = x + F.linear(h, state[p + "attention.projection.weight"], state[p + "attention.projection.bias"])
        h = F.layer_norm(x, (width,), state[p + "layernorm2.weight"], state[p + "layernorm2.bias"])
        h = F.linear(F.gelu(F.linear(h, state[p + "mlp.encoder.weight"], state[p + "mlp.encoder.bias"])),
                     state[p + "mlp.decoder.weight"], state[p + "mlp.decoder.bias"])  # fmt: skip
        x = x + h
    return F.layer_norm(x, (width,), state["final_layernorm.weight"], state["final_layernorm.bias"])


def head_state(dim: int, kdim: int, seed: int) -> dict[str, torch.Tensor]:
    """One official head: ``cross_attention.*`` (nn.MultiheadAttention's own names) and ``mlp.*``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    attn = "cross_attention.multihead_attn."
    if kdim == dim:
        state = {attn + "in_proj_weight": r(3 * dim, dim)}
    else:
        state = {attn + "q_proj_weight": r(dim, dim), attn + "k_proj_weight": r(dim, kdim),
                 attn + "v_proj_weight": r(dim, kdim)}  # fmt: skip
    return state | {
        "cross_attention.query": r(1, 1, dim, scale=1.0),
        attn + "in_proj_bias": r(3 * dim), attn + "out_proj.weight": r(dim, dim), attn + "out_proj.bias": r(dim),
        "cross_attention.layernorm.weight": r(dim, offset=1.0), "cross_attention.layernorm.bias": r(dim),
        "mlp.encoder.weight": r(4 * dim, dim), "mlp.encoder.bias": r(4 * dim),
        "mlp.decoder.weight": r(dim, 4 * dim), "mlp.decoder.bias": r(dim),
    }  # fmt: skip


def head_forward(state: dict, hidden: torch.Tensor, heads: int, residual: bool) -> torch.Tensor:
    """CrossAttentionHead then MLP as the official ImageHead / SpectrumHead call them."""
    a = "cross_attention.multihead_attn."
    dim = state["cross_attention.query"].shape[-1]
    if a + "in_proj_weight" in state:
        wq, wk, wv = state[a + "in_proj_weight"].split(dim)
    else:
        wq, wk, wv = state[a + "q_proj_weight"], state[a + "k_proj_weight"], state[a + "v_proj_weight"]
    bq, bk, bv = state[a + "in_proj_bias"].split(dim)
    batch = len(hidden)
    q = F.linear(state["cross_attention.query"].expand(batch, -1, -1), wq, bq)
    k, v = F.linear(hidden, wk, bk), F.linear(hidden, wv, bv)
    q, k, v = (t.view(batch, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), dim=-1)
    x = (att @ v).transpose(1, 2).reshape(batch, 1, dim)
    x = F.linear(x, state[a + "out_proj.weight"], state[a + "out_proj.bias"])
    x = F.layer_norm(x, (dim,), state["cross_attention.layernorm.weight"], state["cross_attention.layernorm.bias"])
    m = F.linear(F.gelu(F.linear(x, state["mlp.encoder.weight"], state["mlp.encoder.bias"])),
                 state["mlp.decoder.weight"], state["mlp.decoder.bias"])  # fmt: skip
    return (x + m if residual else m)[:, 0]


def official_to_rgb(image_hwc: np.ndarray) -> np.ndarray:
    """The official ToRGB (astrodino/data/augmentations.py) on one (H, W, 3) g, r, z image -> (H, W, 3)."""
    imgs = np.transpose(image_hwc, (2, 0, 1))
    scales = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}
    intensity = sum(np.maximum(0, img * scales[b][1] + 0.03) for img, b in zip(imgs, "grz", strict=True)) / 3
    f = np.arcsinh(20 * intensity) / np.sqrt(20)
    intensity = intensity + (intensity == 0.0) * 1e-6
    rgb = np.zeros((*intensity.shape, 3), np.float32)
    for img, band in zip(imgs, "grz", strict=True):
        plane, scale = scales[band]
        rgb[:, :, plane] = (img * scale + 0.03) * f / intensity
    return np.clip(rgb, 0, 1)


def official_image_input(cutouts: np.ndarray, crop: int) -> torch.Tensor:
    """Our (batch, 3, H, W) cutouts as the official collator hands them to the ViT: ToRGB of the
    (H, W, 3) image, permute(0, 3, 2, 1) (rows and columns swap), CenterCrop(crop)."""
    rgb = torch.tensor(np.stack([official_to_rgb(np.transpose(c, (1, 2, 0))) for c in cutouts]))
    rgb = rgb.permute(0, 3, 2, 1)
    top = int(round((rgb.shape[-2] - crop) / 2))
    left = int(round((rgb.shape[-1] - crop) / 2))
    return rgb[..., top : top + crop, left : left + crop]


VIT = ViTConfig(image_size=16, patch_size=8, embed_dim=16, depth=4, n_heads=2)
SPEC = {"width": 12, "layers": 2, "max_len": 120, "heads": 2}
EMBED, HEAD_HEADS = 16, 2  # the head width equals the ViT width, as in v2 (1024)


def astroclip_state(vit: ViTConfig = VIT, spec: dict = SPEC, embed: int = EMBED) -> dict[str, torch.Tensor]:
    """The official AstroCLIP state dict: AstroDINO backbone in 2 chunks, SpecFormer, two heads; the
    image head's kdim equals its width only when the ViT's width equals ``embed`` (as in v2: 1024)."""
    teacher = astrodino_checkpoint(vit)["teacher"]
    state = {f"image_encoder.{k}": v for k, v in teacher.items() if k.startswith("backbone.")}
    spectrum = specformer_state(spec["width"], spec["layers"], spec["max_len"], seed=1)
    state |= {f"spectrum_encoder.backbone.{k}": v for k, v in spectrum.items()}
    state |= {f"image_encoder.{k}": v for k, v in head_state(embed, vit.embed_dim, seed=2).items()}
    state |= {f"spectrum_encoder.{k}": v for k, v in head_state(embed, spec["width"], seed=3).items()}
    return state


def astroclip_forward(state: dict, cutouts: np.ndarray, spectra: np.ndarray, vit=VIT, spec=SPEC, crop=None):
    """(image, spectrum) embeddings of the official AstroClipModel, unnormalised."""

    def part(prefix):
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    images = official_image_input(cutouts, crop or vit.image_size)
    patches = dinov2_forward(part("image_encoder."), images, vit, chunks=2, positioned=False)
    tokens = torch.tensor(official_preprocess(spectra), dtype=torch.float32)
    hidden = specformer_forward(part("spectrum_encoder.backbone."), tokens, spec["heads"])
    return (
        head_forward(part("image_encoder."), patches, HEAD_HEADS, residual=False),
        head_forward(part("spectrum_encoder."), hidden, HEAD_HEADS, residual=True),
    )


@contextlib.contextmanager
def official_modules():
    """Modules named like the official package's, present only inside the block; their classes'
    objects print "RAN" if they are ever rebuilt by calling what they name."""
    names = ["astroclip", "astroclip.models", "astroclip.models.astroclip", "dinov2", "dinov2.models"]
    modules = {name: types.ModuleType(name) for name in names}

    class ImageHead:  # stands for the official module pickled in hyper_parameters
        def __init__(self):
            self.backbone = {"weights": torch.zeros(2)}

    class Hook:
        def __reduce__(self):
            return (print, ("RAN",))

    for cls, module in ((ImageHead, "astroclip.models.astroclip"), (Hook, "dinov2.models")):
        cls.__module__ = module
        cls.__qualname__ = cls.__name__
        setattr(modules[module], cls.__name__, cls)
    sys.modules.update(modules)
    try:
        yield modules
    finally:
        for name in names:
            sys.modules.pop(name, None)


def write_lightning_checkpoint(path, state: dict, hyper_parameters: dict | None = None) -> None:
    """``state`` saved as Lightning saves a checkpoint, with official-package objects in
    ``hyper_parameters`` (see ``official_modules``)."""
    with official_modules() as modules:
        hyper = {"image_encoder": modules["astroclip.models.astroclip"].ImageHead(),
                 "hook": modules["dinov2.models"].Hook(), "temperature": 15.5} | (hyper_parameters or {})  # fmt: skip
        torch.save(
            {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.1.0",
             "state_dict": collections.OrderedDict(state), "hyper_parameters": hyper, "callbacks": {}},
            path,
        )  # fmt: skip
