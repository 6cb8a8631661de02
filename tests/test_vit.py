"""The image ViT of AstroCLIP v2: shapes, positions, masking, parameter count, determinism."""

import pytest
import torch

from astroclip_pipeline.models.transformer import Block, add_residual_on_subset
from astroclip_pipeline.models.vit import VisionTransformer, ViTConfig, count_parameters, flops_per_image

TINY = ViTConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, n_heads=4, drop_path=0.2)


def test_token_shapes_for_the_trained_crop_and_for_smaller_and_larger_ones():
    model = VisionTransformer(TINY).eval()
    assert model.forward_tokens(torch.rand(3, 3, 32, 32)).shape == (3, 1 + 16, 32)
    assert model.forward_tokens(torch.rand(2, 3, 16, 16)).shape == (2, 1 + 4, 32)  # a local crop
    assert model.forward_tokens(torch.rand(2, 3, 48, 40)).shape == (2, 1 + 30, 32)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 32)
    with pytest.raises(ValueError, match="8-pixel patches"):
        model(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        VisionTransformer(ViTConfig(image_size=30, patch_size=8))


def test_the_embedding_is_the_normalised_cls_token():
    model = VisionTransformer(TINY).eval()
    images = torch.rand(2, 3, 32, 32)
    tokens = model.forward_tokens(images)
    torch.testing.assert_close(model(images), tokens[:, 0])
    # the final LayerNorm: zero mean and unit variance per token before its (initial) affine map
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 17), atol=1e-5, rtol=0)


def test_positions_are_kept_on_the_trained_grid_and_resampled_on_others():
    model = VisionTransformer(TINY)
    assert model.positions(4, 4) is model.pos_embed
    with torch.no_grad():
        model.pos_embed[:, 1:] = 0.7  # a constant field stays constant under bicubic resampling
        model.pos_embed[:, 0] = -3.0
    for grid in ((2, 2), (3, 5), (8, 8)):
        positions = model.positions(*grid)
        assert positions.shape == (1, 1 + grid[0] * grid[1], 32)
        assert torch.all(positions[:, 0] == -3.0)  # CLS keeps its own
        torch.testing.assert_close(positions[:, 1:], torch.full_like(positions[:, 1:], 0.7))
    # a field that varies across the grid: upsampling by 2 keeps its left-to-right order and range
    ramp = torch.arange(4.0).repeat(4)  # columns 0..3 in every row
    with torch.no_grad():
        model.pos_embed[0, 1:] = ramp[:, None]
    up = model.positions(8, 8)[0, 1:, 0].reshape(8, 8)
    assert torch.all(torch.diff(up, dim=1) > 0) and torch.allclose(up, up[:1].expand(8, 8))
    assert up.min() >= -0.2 and up.max() <= 3.2


def test_masked_patches_become_the_mask_token():
    model = VisionTransformer(TINY).eval()
    with torch.no_grad():
        model.mask_token.normal_()
    images = torch.rand(2, 3, 32, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, [1, 5]] = True
    plain, masked = model.embed(images), model.embed(images, masks)
    torch.testing.assert_close(masked[1], plain[1])  # nothing masked in the second image
    unmasked_rows = [0] + [1 + i for i in range(16) if i not in (1, 5)]
    torch.testing.assert_close(masked[0, unmasked_rows], plain[0, unmasked_rows])
    positions = model.positions(4, 4)[0]
    for patch in (1, 5):
        torch.testing.assert_close(masked[0, 1 + patch], model.mask_token[0] + positions[1 + patch])


def test_cls_attention_maps_are_the_last_blocks_softmax():
    model = VisionTransformer(TINY).eval()
    maps = model.last_attention(torch.rand(2, 3, 32, 32))
    assert maps.shape == (2, 4, 4, 4)  # batch, heads, grid
    assert torch.all(maps >= 0) and torch.all(maps.sum((-1, -2)) < 1)  # the rest is on CLS itself


def test_parameter_count_of_the_paper_vit_l12_without_allocating_it():
    d, depth, patches = 1024, 24, (144 // 12) ** 2
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    expected = depth * per_block + (3 * 12 * 12 * d + d) + d + (1 + patches) * d + d + 2 * d
    assert count_parameters(ViTConfig.preset("paper")) == expected == 302_954_496  # FACTS: 302M
    laptop = ViTConfig.preset("laptop")
    assert count_parameters(laptop) == sum(p.numel() for p in VisionTransformer(laptop).parameters()) < 1_000_000
    # the FLOP count: per block and token 24 d^2 + 4 n d for n = 145 tokens, 3 x 144 x d per patch
    expected_flops = depth * 145 * (24 * d * d + 4 * 145 * d) + 2 * 3 * 144 * d * patches
    assert flops_per_image(ViTConfig.preset("paper")) == pytest.approx(expected_flops)


def test_same_seed_same_model_and_eval_is_deterministic_while_drop_path_is_not():
    torch.manual_seed(3)
    a = VisionTransformer(TINY)
    torch.manual_seed(3)
    b = VisionTransformer(TINY)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    images = torch.rand(8, 3, 32, 32)
    torch.testing.assert_close(a.eval()(images), b.eval()(images), rtol=0, atol=0)
    a.train()
    with torch.no_grad():
        for block in a.blocks:  # make the residual branches matter so dropping them shows
            block.ls_attn.gamma.fill_(1.0)
            block.ls_mlp.gamma.fill_(1.0)
        assert not torch.equal(a(images), a(images))  # stochastic depth draws anew


def test_block_parameter_names_are_shared_and_extras_only_when_asked():
    plain = {name for name, _ in Block(16, 2).named_parameters()}
    assert plain == {
        f"{m}.{p}" for m in ("ln_attn", "attn.qkv", "attn.proj", "ln_mlp", "mlp.0", "mlp.2") for p in ("weight", "bias")
    }
    scaled = {name for name, _ in Block(16, 2, layerscale=1e-5, drop_path=0.1).named_parameters()}
    assert scaled - plain == {"ls_attn.gamma", "ls_mlp.gamma"}


def test_drop_path_above_one_tenth_adds_the_scaled_branch_to_exactly_the_kept_rows():
    x = torch.randn(10, 3, 4)
    out = add_residual_on_subset(x, lambda rows: 2 * rows + 1, 0.3)
    changed = (out != x).flatten(1).any(dim=1)
    assert int(changed.sum()) == 7  # int(10 * 0.7) rows through the branch, the others untouched
    torch.testing.assert_close(out[changed], x[changed] + (2 * x[changed] + 1) * 10 / 7)
    torch.testing.assert_close(out[~changed], x[~changed], rtol=0, atol=0)
    # a block's branches see 7 of 10 rows in training above the threshold, all 10 at it and in eval
    for p, mode, rows in [(0.3, "train", 7), (0.1, "train", 10), (0.3, "eval", 10)]:
        block = getattr(Block(4, 2, drop_path=p), mode)()
        seen = []
        for name in ("_attention_branch", "_mlp_branch"):
            branch = getattr(block, name)
            setattr(block, name, lambda y, branch=branch, seen=seen: seen.append(len(y)) or branch(y))
        with torch.no_grad():
            assert block(x).shape == x.shape
        assert seen == [rows, rows], (p, mode)
