"""The published AstroDINO weights (AstroCLIP v2's image encoder) mapped onto our ViT (``vit.py``).

The checkpoint (Hugging Face ``polymathic-ai/astrodino``, astrodino.ckpt, 1.31 GB) is a dict
``{"teacher": state_dict}``: DINOv2 evaluates and publishes the teacher. Its keys are DINOv2's
(facebookresearch/dinov2, ``models/vision_transformer.py`` and ``layers/block.py``):

- ``backbone.`` + the ViT's: ``patch_embed.proj.{weight,bias}``, ``cls_token`` (1, 1, d),
  ``pos_embed`` (1, 1 + patches, d), ``mask_token`` (1, d), ``norm.{weight,bias}``, and the blocks
  in chunks (``block_chunks: 4``, for FSDP): ``blocks.{chunk}.{i}.*`` where ``i`` is the block's
  index in the whole stack (a chunk pads its front with parameter-free ``nn.Identity``), each with
  ``norm1``, ``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``,
  ``ls2.gamma``;
- ``dino_head.*`` (and ``ibot_head.*`` when separate): the pretraining heads, not needed here.

``astrodino_to_vit`` keeps ``backbone.``, drops the prefix, removes the chunk index and renames the
block parts to ours; ``import_astrodino`` loads the result into a ViT only when every key and
shape fits, and otherwise stops with the lists of missing, unexpected and mis-shaped keys.
"""

import re
from pathlib import Path

import torch

from .image_encoder import ViTImageEncoder, read_state_dict, require_same_keys, save_image_encoder
from .vit import ViTConfig

BACKBONE_PREFIX = "backbone."
#: DINOv2's block part -> ours (``transformer.Block``).
BLOCK_PARTS = {
    "norm1": "ln_attn",
    "attn.qkv": "attn.qkv",
    "attn.proj": "attn.proj",
    "ls1": "ls_attn",
    "norm2": "ln_mlp",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
    "ls2": "ls_mlp",
}
#: AstroDINO's attention heads per block (ViT-L), which its weights' shapes cannot tell
VIT_HEADS = 16
_CHUNKED_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)\.(weight|bias|gamma)$")


def astrodino_to_vit(teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AstroDINO's teacher state dict -> keys of ``VisionTransformer``; keys it cannot map are
    kept as they are (without the prefix), so that the check reports them as unexpected."""
    state = {}
    for key, value in teacher.items():
        if not key.startswith(BACKBONE_PREFIX):
            continue  # the DINO/iBOT heads
        name = key.removeprefix(BACKBONE_PREFIX)
        block = _CHUNKED_BLOCK.match(name)
        if block and block.group(2) in BLOCK_PARTS:
            index, part, kind = block.groups()
            name = f"blocks.{index}.{BLOCK_PARTS[part]}.{kind}"
        state[name] = value
    return state


def import_astrodino(
    checkpoint: str | Path,
    output: str | Path,
    config: ViTConfig | None = None,
    n_heads: int = VIT_HEADS,
    crop: int | None = None,
    transpose: bool = False,
) -> ViTImageEncoder:
    """Load AstroDINO's teacher backbone into a ViT of ``config`` (the paper preset, crop 144; by
    default read from the weights' shapes with ``n_heads`` heads) and write it as an image-encoder
    file for ``crop``-pixel centre crops (default the ViT's own size; ``transpose``: see
    ``ViTImageEncoder``); its features are the normalised CLS token, as AstroDINO's."""
    state = astrodino_to_vit(read_state_dict(checkpoint, key="teacher"))
    if not state:
        raise KeyError(f"{checkpoint}: no keys start with {BACKBONE_PREFIX!r} under 'teacher'; expected AstroDINO's")
    config = config or vit_config_of_state(state, n_heads, str(checkpoint))
    encoder = ViTImageEncoder(config, crop or config.image_size, transpose)
    what = (
        f"{checkpoint}: does not match a ViT of width {config.embed_dim}, depth {config.depth}, "
        f"{config.patch_size}-pixel patches on {config.image_size}-pixel crops"
    )
    require_same_keys(state, encoder.backbone.state_dict(), what)
    encoder.backbone.load_state_dict(state)
    save_image_encoder(encoder, output, source=f"published AstroDINO weights {checkpoint}")
    return encoder.eval()


def vit_config_of_state(state: dict[str, torch.Tensor], n_heads: int, what: str) -> ViTConfig:
    """Our ViT's config from AstroDINO weights already in our names (``astrodino_to_vit``)."""
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.0.weight"):
        if key not in state:
            raise KeyError(f"{what}: no {key!r}; expected AstroDINO's ViT")
    width, channels, patch, _ = state["patch_embed.proj.weight"].shape
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    return ViTConfig(
        image_size=grid * patch, patch_size=patch, in_channels=channels, embed_dim=width, depth=depth,
        n_heads=n_heads, mlp_ratio=state["blocks.0.mlp.0.weight"].shape[0] / width,
        layerscale=1e-5 if "blocks.0.ls_attn.gamma" in state else None, drop_path=0.0,
    )  # fmt: skip
