"""The published AstroCLIP v2 checkpoints (Parker et al. 2024) loaded without the official package.

Names and shapes read from PolymathicAI/AstroCLIP (main): ``astroclip/models/specformer.py``,
``astroclip/models/astroclip.py`` and ``astroclip/modules.py``.

- ``specformer.ckpt`` (Hugging Face ``polymathic-ai/specformer``): a Lightning checkpoint of its
  ``SpecFormer`` (``hyper_parameters``: input_dim, embed_dim, num_layers, num_heads, max_len...;
  ``state_dict``): ``data_embed`` Linear(22, d), ``position_embed`` Embedding(max_len, d),
  ``blocks.{i}.{layernorm1, attention.attention, attention.projection, layernorm2, mlp.encoder,
  mlp.decoder}``, ``final_layernorm``, ``head`` Linear(d, 22). Our ``SpecFormer`` has the same
  shapes by design under other names (``SPECFORMER_NAMES``, ``BLOCK_NAMES``).
- ``astroclip.ckpt`` (``polymathic-ai/astroclip``): a Lightning checkpoint of its ``AstroClipModel``,
  whose ``hyper_parameters`` pickle its ``ImageHead`` and ``SpectrumHead`` modules (read here as
  inert placeholders, ``torch_files.read_checkpoint``). ``state_dict``: ``image_encoder.backbone.*``
  (AstroDINO's ViT in DINOv2's names, ``astrodino.py``), ``spectrum_encoder.backbone.*`` (the
  SpecFormer above), and per side ``cross_attention.{query (1, 1, 1024), multihead_attn.*,
  layernorm.*}`` and ``mlp.{encoder, decoder}`` (1024 -> 4096 -> 1024). The image side's
  MultiheadAttention has ``in_proj_weight`` (keys of width 1024 = its width), the spectrum side's
  ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (keys of width 768): torch names them so
  when kdim differs from the width, and our ``CrossAttentionHead`` gets the same names the same way.

Shapes give every width and depth; the numbers of attention heads they cannot give (the
official values are the defaults: 6 in the SpecFormer, 16 in the ViT, 4 in the heads). Every
loader stops with the lists of missing, unexpected and mis-shaped keys when a file does not fit.
"""

import json
import re
from pathlib import Path

import torch

from .astroclip import AstroCLIP, save_astroclip
from .astrodino import VIT_HEADS, astrodino_to_vit, import_astrodino, vit_config_of_state
from .image_encoder import ViTImageEncoder, require_same_keys
from .specformer import TOKEN_WIDTH, SpecFormer, SpecFormerConfig, save_encoder
from .torch_files import read_checkpoint

#: official SpecFormer module -> ours (outside the blocks)
SPECFORMER_NAMES = {
    "data_embed.weight": "embed.weight",
    "data_embed.bias": "embed.bias",
    "position_embed.weight": "position",
    "final_layernorm.weight": "ln_final.weight",
    "final_layernorm.bias": "ln_final.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
}
#: official TransformerBlock part -> ours (``transformer.Block``)
BLOCK_NAMES = {
    "layernorm1": "ln_attn",
    "attention.attention": "attn.qkv",
    "attention.projection": "attn.proj",
    "layernorm2": "ln_mlp",
    "mlp.encoder": "mlp.0",
    "mlp.decoder": "mlp.2",
}
#: official head parts (``cross_attention.*``, ``mlp.*``) -> ours (``CrossAttentionHead``)
HEAD_NAMES = {"cross_attention.query": "query", "cross_attention.multihead_attn": "attention",
              "cross_attention.layernorm": "layernorm", "mlp.encoder": "mlp.0", "mlp.decoder": "mlp.2"}  # fmt: skip
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")

#: the official numbers of attention heads, which shapes cannot tell
SPECFORMER_HEADS = 6
HEAD_HEADS = 4


def _rename(name: str, table: dict[str, str]) -> str:
    """``name`` with the longest prefix found in ``table`` replaced; unchanged when none fits."""
    for official in sorted(table, key=len, reverse=True):
        if name == official or name.startswith(official + "."):
            return table[official] + name[len(official) :]
    return name


def specformer_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SpecFormer keys -> ours; keys it cannot map stay as they are (reported as unexpected)."""
    mapped = {}
    for key, value in state.items():
        block = _BLOCK.match(key)
        if block and block.group(2) in BLOCK_NAMES:
            index, part, kind = block.groups()
            key = f"blocks.{index}.{BLOCK_NAMES[part]}.{kind}"
        else:
            key = SPECFORMER_NAMES.get(key, key)
        mapped[key] = value
    return mapped


def specformer_config_of(state: dict[str, torch.Tensor], n_heads: int, what: str) -> SpecFormerConfig:
    """Our SpecFormer's config from official SpecFormer weights (shapes) and the number of heads."""
    for key in ("data_embed.weight", "position_embed.weight"):
        if key not in state:
            raise KeyError(f"{what}: no {key!r}; expected the official SpecFormer's weights")
    width, token_width = state["data_embed.weight"].shape
    if token_width != TOKEN_WIDTH:
        raise ValueError(f"{what}: data_embed takes {token_width}-wide tokens, expected {TOKEN_WIDTH}")
    n_layers = len({m.group(1) for key in state if (m := _BLOCK.match(key))})
    max_len = state["position_embed.weight"].shape[0]
    return SpecFormerConfig(embed_dim=width, n_layers=n_layers, n_heads=n_heads, max_len=max_len)


def _state_dict(payload, path: str | Path) -> dict[str, torch.Tensor]:
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a Lightning checkpoint with a 'state_dict' of tensors")
    return state


def load_published_specformer(path: str | Path, n_heads: int = SPECFORMER_HEADS) -> SpecFormer:
    """``specformer.ckpt`` -> our SpecFormer in eval mode. The number of heads is the file's
    ``hyper_parameters.num_heads`` when it has one, else ``n_heads``.

    Raises:
        ValueError: the weights do not fit (lists of missing, unexpected, mis-shaped keys).
    """
    payload = read_checkpoint(path)
    state = _state_dict(payload, path)
    hyper = payload.get("hyper_parameters")
    if isinstance(hyper, dict) and isinstance(hyper.get("num_heads"), int):
        n_heads = hyper["num_heads"]
    model = SpecFormer(specformer_config_of(state, n_heads, str(path)), preprocessing="official")
    ours = specformer_to_ours(state)
    require_same_keys(ours, model.state_dict(), f"{path}: does not match the official SpecFormer's layout")
    model.load_state_dict(ours)
    return model.eval()


def split_astroclip(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The official AstroCLIP state dict by part: image/spectrum backbone and head (official names,
    the part's prefix removed); keys outside these parts under "other"."""
    parts = {"image_backbone": {}, "image_head": {}, "spectrum_backbone": {}, "spectrum_head": {}, "other": {}}
    for key, value in state.items():
        side, _, rest = key.partition("_encoder.")
        if side in ("image", "spectrum") and rest.startswith("backbone."):
            parts[f"{side}_backbone"][rest.removeprefix("backbone.")] = value
        elif side in ("image", "spectrum") and rest.startswith(("cross_attention.", "mlp.")):
            parts[f"{side}_head"][rest] = value
        else:
            parts["other"][key] = value
    return parts


def load_published_astroclip(
    path: str | Path,
    spectrum_heads: int = SPECFORMER_HEADS,
    image_heads: int = VIT_HEADS,
    head_heads: int = HEAD_HEADS,
    crop: int | None = None,
) -> AstroCLIP:
    """``astroclip.ckpt`` -> our AstroCLIP (eval mode) computing what the official model computes:
    the official heads (``heads="official"``), the image head over the unpositioned patch tokens
    (``image_tokens="patches"``) and the official preprocessing. ``crop``: the centre crop of the
    cutouts (pixels), by default the ViT's own size (144 for the published model on 152-pixel cutouts).

    Raises:
        ValueError: the weights do not fit (lists of missing, unexpected, mis-shaped keys).
    """
    parts = split_astroclip(_state_dict(read_checkpoint(path), path))
    what = f"{path}: does not match the official AstroCLIP layout"
    vit_state = astrodino_to_vit({f"backbone.{k}": v for k, v in parts["image_backbone"].items()})
    vit_config = vit_config_of_state(vit_state, image_heads, str(path))
    spectrum_state = parts["spectrum_backbone"]
    spectrum_encoder = SpecFormer(specformer_config_of(spectrum_state, spectrum_heads, str(path)), "official")
    query = parts["spectrum_head"].get("cross_attention.query")
    if query is None:
        raise KeyError(f"{path}: no 'spectrum_encoder.cross_attention.query'; expected the official AstroCLIP")
    model = AstroCLIP(
        ViTImageEncoder(vit_config, crop or vit_config.image_size, transpose=True),
        spectrum_encoder,
        embed_dim=query.shape[-1],
        n_heads=head_heads,
        image_tokens="patches",
        heads="official",
    )
    ours = {f"image_encoder.backbone.{k}": v for k, v in vit_state.items()}
    ours |= {f"spectrum_encoder.{k}": v for k, v in specformer_to_ours(spectrum_state).items()}
    ours |= {f"image_cross_attention.{_rename(k, HEAD_NAMES)}": v for k, v in parts["image_head"].items()}
    ours |= {f"spectrum_head.{_rename(k, HEAD_NAMES)}": v for k, v in parts["spectrum_head"].items()}
    ours |= parts["other"]  # nothing else belongs in the file: reported as unexpected
    require_same_keys(ours, model.state_dict(), what)
    model.load_state_dict(ours)
    return model.eval()


def import_published_specformer(checkpoint: str | Path, output: str | Path, n_heads: int = SPECFORMER_HEADS) -> None:
    """``specformer.ckpt`` -> a spectrum-encoder file (``specformer.save_encoder``), as pretraining writes."""
    save_encoder(load_published_specformer(checkpoint, n_heads), output)


def import_published_astroclip(
    checkpoint: str | Path,
    record: str | Path,
    output: str | Path,
    spectrum_heads: int = SPECFORMER_HEADS,
    image_heads: int = VIT_HEADS,
    head_heads: int = HEAD_HEADS,
    crop: int | None = None,
) -> None:
    """``astroclip.ckpt`` -> an AstroCLIP model file (``save_astroclip``), as the alignment writes;
    its ``settings`` hold the fetch record (``record``: repository, revision, SHA-256)."""
    model = load_published_astroclip(checkpoint, spectrum_heads, image_heads, head_heads, crop)
    save_astroclip(model, output, settings={"published": json.loads(Path(record).read_text())})


def import_published_astrodino(
    checkpoint: str | Path, output: str | Path, n_heads: int = VIT_HEADS, crop: int | None = None
) -> None:
    """``astrodino.ckpt`` -> an image-encoder file; the ViT's sizes read from the weights, its
    cutouts transposed as the official collator hands them over (``ViTImageEncoder.transpose``)."""
    import_astrodino(checkpoint, output, n_heads=n_heads, crop=crop, transpose=True)
