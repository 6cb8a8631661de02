"""The published SpecFormer and AstroCLIP checkpoints: key maps, the restricted unpickler, and
forwards checked against the official modules' definitions written out in the test."""

import sys

import numpy as np
import pytest
import torch

from astroclip_pipeline.models.astroclip import load_astroclip, save_astroclip
from astroclip_pipeline.models.image_encoder import load_image_encoder
from astroclip_pipeline.models.published import (
    import_published_astrodino,
    import_published_specformer,
    load_published_astroclip,
    load_published_specformer,
)
from astroclip_pipeline.models.specformer import load_encoder, official_tokenize

from .published_checkpoints import (
    EMBED,
    HEAD_HEADS,
    SPEC,
    VIT,
    astroclip_forward,
    astroclip_state,
    official_image_input,
    official_preprocess,
    specformer_forward,
    specformer_state,
    write_lightning_checkpoint,
)
from .test_astrodino import astrodino_checkpoint, dinov2_forward


def spectra(n=3, pixels=101, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (5 + rng.normal(0, 2, (n, pixels))).astype(np.float32)


def test_official_preprocessing_on_hand_made_spectra():
    # 41 pixels 0..40: mean 20, sample std sqrt(41 * 42 / 12) = 11.979...; slices start at 0, 10,
    # 20 (30 would be short and is dropped): 1 + 3 tokens
    flux = torch.arange(41, dtype=torch.float32)[None]
    tokens = official_tokenize(flux)
    std = (41 * 42 / 12) ** 0.5
    assert tokens.shape == (1, 4, 22)
    torch.testing.assert_close(tokens[0, 0, :2], torch.tensor([(20 - 2) / 2, (std - 2) / 8]))
    torch.testing.assert_close(tokens[0, 2, 2:], (torch.arange(10, 30.0) - 20) / std)
    # a flat spectrum: std clipped at 0.2, so (0 - 2) / 8 and zero slices; masked pixels are not special
    flat = official_tokenize(torch.full((1, 41), 3.0))
    torch.testing.assert_close(flat[0, 0, :2], torch.tensor([0.5, (0.2 - 2) / 8]))
    assert torch.all(flat[0, 1:] == 0)
    batch = spectra(pixels=7781)
    torch.testing.assert_close(
        official_tokenize(torch.tensor(batch)), torch.tensor(official_preprocess(batch), dtype=torch.float32)
    )
    assert official_tokenize(torch.tensor(batch)).shape == (3, 778, 22)


def test_specformer_checkpoint_gives_the_official_embedding(tmp_path):
    state = specformer_state(width=16, layers=2, max_len=20)
    write_lightning_checkpoint(tmp_path / "specformer.ckpt", state, {"num_heads": 4, "embed_dim": 16})
    model = load_published_specformer(tmp_path / "specformer.ckpt")
    assert (model.config.embed_dim, model.config.n_layers, model.config.n_heads, model.config.max_len) == (16, 2, 4, 20)
    tokens = official_tokenize(torch.tensor(spectra()))
    with torch.no_grad():
        hidden, _ = model(tokens)
    torch.testing.assert_close(hidden, specformer_forward(state, tokens, heads=4), atol=1e-5, rtol=1e-5)
    # nothing the file's hyper-parameters name was imported or run
    assert "astroclip" not in sys.modules and "dinov2" not in sys.modules


def test_a_specformer_file_that_does_not_fit_lists_the_keys(tmp_path):
    state = specformer_state(width=16, layers=2, max_len=20)
    del state["blocks.1.mlp.decoder.bias"]
    state["blocks.0.attention.mask"] = torch.zeros(1)
    state["head.weight"] = torch.zeros(21, 16)
    write_lightning_checkpoint(tmp_path / "bad.ckpt", state, {"num_heads": 4})
    with pytest.raises(ValueError) as error:
        load_published_specformer(tmp_path / "bad.ckpt")
    message = str(error.value)
    assert str(tmp_path / "bad.ckpt") in message
    assert "missing keys (1): ['blocks.1.mlp.2.bias']" in message
    assert "unexpected keys (1): ['blocks.0.attention.mask']" in message
    assert "wrong shapes (1): head.weight (21, 16) != (22, 16)" in message


def test_astroclip_checkpoint_gives_the_official_embeddings(tmp_path, capfd):
    state = astroclip_state()
    write_lightning_checkpoint(tmp_path / "astroclip.ckpt", state)
    model = load_published_astroclip(tmp_path / "astroclip.ckpt", spectrum_heads=SPEC["heads"],
                                     image_heads=VIT.n_heads, head_heads=HEAD_HEADS, crop=16)  # fmt: skip
    assert "RAN" not in capfd.readouterr().out
    assert "astroclip" not in sys.modules and "dinov2" not in sys.modules
    # the image head's MultiheadAttention packs q, k, v (kdim = width), the spectrum head's does not
    assert model.image_head.attention._qkv_same_embed_dim and not model.spectrum_head.attention._qkv_same_embed_dim
    rng = np.random.default_rng(1)
    cutouts = rng.normal(0.05, 0.1, (3, 3, 20, 20)).astype(np.float32)  # cropped to 16, transposed
    flux = spectra(pixels=SPEC["max_len"] * 10 - 30)
    image, spectrum = astroclip_forward(state, cutouts, flux, crop=16)
    with torch.no_grad():
        ours_image = model.image_embedding(torch.tensor(cutouts))
        ours_spectrum = model.spectrum_embedding(torch.tensor(flux), torch.ones(flux.shape))
    assert ours_image.shape == (3, EMBED)
    torch.testing.assert_close(ours_image, image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_spectrum, spectrum, atol=1e-4, rtol=1e-4)
    # the transposition matters: without it the image embedding differs
    with torch.no_grad():
        model.image_encoder.transpose = False
        assert not torch.allclose(model.image_embedding(torch.tensor(cutouts)), image, atol=1e-3)
    # and it survives the model file the workflow writes
    save_astroclip(model, tmp_path / "ours.ckpt", settings={})
    reloaded = load_astroclip(tmp_path / "ours.ckpt")
    assert reloaded.heads == "official" and reloaded.spectrum_encoder.preprocessing == "official"
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.spectrum_embedding(torch.tensor(flux), None), spectrum, atol=1e-4, rtol=1e-4
        )


def test_before_alignment_encoders_keep_the_official_preprocessing(tmp_path):
    """The published SpecFormer and AstroDINO as the workflow's encoder files: the features of the
    before-alignment rows come out as the official code computes them (token mean; CLS token)."""
    state = specformer_state(width=16, layers=2, max_len=20)
    write_lightning_checkpoint(tmp_path / "specformer.ckpt", state, {"num_heads": 4})
    import_published_specformer(tmp_path / "specformer.ckpt", tmp_path / "spectrum_encoder.ckpt")
    encoder = load_encoder(tmp_path / "spectrum_encoder.ckpt")
    flux = spectra()
    flux[:, :30] = 0.0  # pixels the survey masked: the official code standardises them like the others
    ivar = np.ones_like(flux)
    ivar[:, :30] = 0.0
    tokens = torch.tensor(official_preprocess(flux), dtype=torch.float32)
    with torch.no_grad():
        hidden, _ = encoder(encoder.tokens(torch.tensor(flux), torch.tensor(ivar)))
    torch.testing.assert_close(hidden, specformer_forward(state, tokens, heads=4), atol=1e-5, rtol=1e-5)

    checkpoint = astrodino_checkpoint(VIT)
    torch.save(checkpoint, tmp_path / "astrodino.ckpt")
    import_published_astrodino(tmp_path / "astrodino.ckpt", tmp_path / "image_encoder.ckpt", VIT.n_heads, crop=16)
    image_encoder = load_image_encoder(tmp_path / "image_encoder.ckpt")
    cutouts = np.random.default_rng(2).normal(0.05, 0.1, (2, 3, 20, 20)).astype(np.float32)
    expected = dinov2_forward(checkpoint["teacher"], official_image_input(cutouts, 16), VIT, chunks=2)[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(image_encoder(torch.tensor(cutouts)), expected, atol=1e-5, rtol=1e-5)


def test_an_astroclip_file_that_does_not_fit_lists_the_keys(tmp_path):
    state = astroclip_state()
    del state["spectrum_encoder.cross_attention.multihead_attn.k_proj_weight"]
    state["image_encoder.extra.weight"] = torch.zeros(2)
    state["image_encoder.mlp.encoder.weight"] = torch.zeros(EMBED, EMBED)
    write_lightning_checkpoint(tmp_path / "bad.ckpt", state)
    with pytest.raises(ValueError) as error:
        load_published_astroclip(tmp_path / "bad.ckpt", SPEC["heads"], VIT.n_heads, HEAD_HEADS)
    message = str(error.value)
    assert "missing keys (1): ['spectrum_head.attention.k_proj_weight']" in message
    assert "unexpected keys (1): ['image_encoder.extra.weight']" in message
    wrong = f"image_cross_attention.mlp.0.weight ({EMBED}, {EMBED}) != ({4 * EMBED}, {EMBED})"
    assert f"wrong shapes (1): {wrong}" in message
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "bad.ckpt").read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut.ckpt: not a complete torch file"):
        load_published_astroclip(tmp_path / "cut.ckpt")
