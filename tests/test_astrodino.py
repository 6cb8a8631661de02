"""The published AstroDINO checkpoint: DINOv2's key layout mapped onto our ViT, checked against a
forward pass written independently from DINOv2's definitions."""

import pytest
import torch
import torch.nn.functional as F

from astroclip_pipeline.models.astrodino import astrodino_to_vit, import_astrodino
from astroclip_pipeline.models.image_encoder import load_image_encoder
from astroclip_pipeline.models.vit import ViTConfig

CONFIG = ViTConfig(image_size=16, patch_size=8, embed_dim=16, depth=4, n_heads=2)
CHUNKS = 2  # blocks 0-1 in chunk 0, blocks 2-3 in chunk 1, indexed globally as DINOv2's BlockChunk


def astrodino_checkpoint(config: ViTConfig = CONFIG, chunks: int = CHUNKS) -> dict:
    """{"teacher": state_dict} with DINOv2's names and shapes, random values (gammas near 1, so
    that every block matters), plus a DINO head as the published file has."""
    g = torch.Generator().manual_seed(0)
    d, p, n = config.embed_dim, config.patch_size, config.grid**2

    def r(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    state = {
        "backbone.cls_token": r(1, 1, d),
        "backbone.pos_embed": r(1, 1 + n, d),
        "backbone.mask_token": torch.zeros(1, d),
        "backbone.patch_embed.proj.weight": r(d, 3, p, p),
        "backbone.patch_embed.proj.bias": r(d),
        "backbone.norm.weight": r(d, offset=1.0),
        "backbone.norm.bias": r(d),
        "dino_head.mlp.0.weight": r(32, d),
        "dino_head.last_layer.weight_g": torch.ones(64, 1),
    }
    per_chunk = config.depth // chunks
    for i in range(config.depth):
        block = f"backbone.blocks.{i // per_chunk}.{i}."
        state |= {
            block + "norm1.weight": r(d, offset=1.0), block + "norm1.bias": r(d),
            block + "attn.qkv.weight": r(3 * d, d), block + "attn.qkv.bias": r(3 * d),
            block + "attn.proj.weight": r(d, d), block + "attn.proj.bias": r(d),
            block + "ls1.gamma": r(d, offset=1.0),
            block + "norm2.weight": r(d, offset=1.0), block + "norm2.bias": r(d),
            block + "mlp.fc1.weight": r(4 * d, d), block + "mlp.fc1.bias": r(4 * d),
            block + "mlp.fc2.weight": r(d, 4 * d), block + "mlp.fc2.bias": r(d),
            block + "ls2.gamma": r(d, offset=1.0),
        }  # fmt: skip
    return {"teacher": state}


def dinov2_forward(
    state: dict, images: torch.Tensor, config: ViTConfig = CONFIG, chunks: int = CHUNKS, positioned: bool = True
):
    """DINOv2's ViT forward written out from its modules' definitions (prepare_tokens_with_masks,
    Block with LayerScale, MemEffAttention, Mlp, final norm; LayerNorm eps 1e-6): normalised tokens.
    ``positioned=False``: patch_embed -> blocks -> norm, as AstroCLIP v2's official image head calls them."""
    d, heads = config.embed_dim, config.n_heads
    s = {k.removeprefix("backbone."): v for k, v in state.items()}
    x = F.conv2d(images, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=config.patch_size)
    x = x.flatten(2).transpose(1, 2)
    if positioned:
        x = torch.cat([s["cls_token"].expand(len(x), -1, -1), x], dim=1) + s["pos_embed"]
    batch, length, _ = x.shape
    per_chunk = config.depth // chunks
    for i in range(config.depth):
        b = f"blocks.{i // per_chunk}.{i}."
        h = F.layer_norm(x, (d,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
        h = (attention @ v).transpose(1, 2).reshape(batch, length, d)
        x = x + s[b + "ls1.gamma"] * F.linear(h, s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])), s[b + "mlp.fc2.weight"])
        x = x + s[b + "ls2.gamma"] * (h + s[b + "mlp.fc2.bias"])
    return F.layer_norm(x, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)


def test_astrodino_weights_give_dinov2s_forward(tmp_path):
    checkpoint = astrodino_checkpoint()
    torch.save(checkpoint, tmp_path / "astrodino.ckpt")
    encoder = import_astrodino(tmp_path / "astrodino.ckpt", tmp_path / "image_encoder.ckpt", CONFIG)
    rgb = torch.rand(3, 3, 16, 16)
    expected = dinov2_forward(checkpoint["teacher"], rgb)
    with torch.no_grad():
        torch.testing.assert_close(encoder.backbone.forward_tokens(rgb), expected, atol=1e-5, rtol=1e-5)
    # the file written is an ordinary image-encoder file; its features are the normalised CLS token
    loaded = load_image_encoder(tmp_path / "image_encoder.ckpt")
    assert loaded.architecture == "vit" and loaded.crop == 16
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone(rgb), expected[:, 0], atol=1e-5, rtol=1e-5)


def test_key_map_strips_unchunks_and_renames():
    state = astrodino_to_vit(astrodino_checkpoint()["teacher"])
    assert "blocks.3.ls_attn.gamma" in state and "blocks.2.mlp.2.weight" in state
    assert not any(k.startswith(("backbone.", "dino_head")) for k in state)
    assert len([k for k in state if k.startswith("blocks.")]) == 4 * 14


def test_a_checkpoint_that_does_not_fit_stops_with_the_lists_of_keys(tmp_path):
    checkpoint = astrodino_checkpoint()
    teacher = checkpoint["teacher"]
    del teacher["backbone.blocks.0.1.ls2.gamma"]
    teacher["backbone.register_tokens"] = torch.zeros(1, 4, 16)
    teacher["backbone.pos_embed"] = torch.zeros(1, 10, 16)
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as error:
        import_astrodino(tmp_path / "bad.ckpt", tmp_path / "out.ckpt", CONFIG)
    message = str(error.value)
    assert "missing keys (1): ['blocks.1.ls_mlp.gamma']" in message
    assert "unexpected keys (1): ['register_tokens']" in message
    assert "wrong shapes (1): pos_embed (1, 10, 16) != (1, 5, 16)" in message
    assert not (tmp_path / "out.ckpt").exists()
    torch.save({"encoder_q.conv1.weight": torch.zeros(1)}, tmp_path / "moco.ckpt")
    with pytest.raises(KeyError, match="no keys start with 'backbone.'"):
        import_astrodino(tmp_path / "moco.ckpt", tmp_path / "out.ckpt", CONFIG)
