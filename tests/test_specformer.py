"""The spectrum transformer: token layout, masking, loss, parameter count."""

import math

import pytest
import torch

from astroclip_pipeline.models.masked_segments import (
    MAX_DEPARTURE,
    chunk_mask,
    hide,
    interpolation_baseline,
    line_emphasis,
    masked_mse,
)
from astroclip_pipeline.models.specformer import (
    MIN_STD,
    SpecFormer,
    SpecFormerConfig,
    count_parameters,
    detokenize,
    n_tokens,
    standardise,
    tokenize,
)


def test_token_layout_on_a_hand_made_spectrum():
    # 50 pixels: values 0..49, so each segment's content says where it came from.
    flux = torch.arange(50, dtype=torch.float32)[None]
    ivar = torch.ones_like(flux)
    tokens, valid = tokenize(flux, ivar)
    mean, std = 24.5, math.sqrt((50**2 - 1) / 12)  # population std of 0..49
    assert tokens.shape == (1, n_tokens(50), 22) == (1, 1 + 4, 22)  # segments start at 0, 10, 20, 30
    # statistics token: (mean - 2)/2 and (std - 2)/8, the rest zero
    torch.testing.assert_close(tokens[0, 0, :2], torch.tensor([(mean - 2) / 2, (std - 2) / 8]))
    assert torch.all(tokens[0, 0, 2:] == 0)
    # segment tokens: two zero feature columns, then 20 standardised pixels, overlapping by 10
    assert torch.all(tokens[0, 1:, :2] == 0)
    for k in range(4):
        expected = (torch.arange(10 * k, 10 * k + 20, dtype=torch.float32) - mean) / std
        torch.testing.assert_close(tokens[0, 1 + k, 2:], expected)
    torch.testing.assert_close(tokens[0, 1, 12:], tokens[0, 2, 2:12])  # the overlap
    assert valid[0, 0, :2].all() and not valid[0, 0, 2:].any() and valid[0, 1:, 2:].all()
    # 7781 DESI pixels -> 778 tokens, as in the official code
    assert n_tokens(7781) == 778


def test_masked_pixels_do_not_bias_mean_and_std():
    flux = torch.tensor([[3.0, 5.0, 0.0, 3.0, 5.0, 1000.0]])
    ivar = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0, 0.0]])
    standard, mean, std = standardise(flux, ivar)
    assert mean.item() == pytest.approx(4.0) and std.item() == pytest.approx(1.0)
    assert standard[0, 2] == 0 and standard[0, 5] == 0  # masked pixels carry nothing
    _, _, flat_std = standardise(torch.full((1, 30), 2.0), torch.ones(1, 30))
    assert flat_std.item() == pytest.approx(MIN_STD)


def test_detokenize_inverts_tokenize():
    flux = torch.randn(3, 205) + 5
    standard, _, _ = standardise(flux, torch.ones_like(flux))
    tokens, _ = tokenize(flux, torch.ones_like(flux))
    back = detokenize(tokens, 205)
    torch.testing.assert_close(back[:, :200], standard[:, :200])
    assert torch.isnan(back[:, 200:]).all()  # the last short segment is dropped


def test_chunk_mask_covers_exactly_the_configured_chunks():
    mask = chunk_mask(batch=64, n_tokens=778, n_chunks=6, chunk_length=30, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool
    assert torch.all(mask.sum(dim=1) == 6 * 30)
    assert not mask[:, 0].any()  # the statistics token is never masked
    for row in mask:
        edges = torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
        starts, stops = torch.nonzero(edges == 1)[:, 0], torch.nonzero(edges == -1)[:, 0]
        assert len(starts) == 6 and torch.all(stops - starts == 30)  # six runs of exactly 30
    with pytest.raises(ValueError, match="do not fit"):
        chunk_mask(batch=1, n_tokens=100, n_chunks=6, chunk_length=30)


def test_masking_and_loss_when_the_data_are_zero():
    """Zeros in the data must stay targets: the mask is explicit, not recovered as input != target."""
    flux = torch.zeros(2, 400)  # a spectrum that is exactly zero everywhere, all pixels good
    ivar = torch.ones_like(flux)
    tokens, valid = tokenize(flux, ivar)
    mask = chunk_mask(2, tokens.shape[1], 3, 5, torch.Generator().manual_seed(1))
    hidden = hide(tokens, mask)
    assert torch.equal(hidden, tokens)  # hiding zeros changes nothing...
    prediction = torch.ones_like(tokens)
    # ...yet every masked good pixel is still scored: a prediction of 1 against 0 costs exactly 1
    assert masked_mse(prediction, tokens, mask, valid).item() == pytest.approx(1.0)


def test_loss_ignores_unmasked_positions_and_bad_pixels():
    tokens = torch.randn(2, 40, 22)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[:, 5:10] = True
    prediction = tokens.clone()
    prediction[~mask] += 100.0  # wildly wrong where it does not count
    assert masked_mse(prediction, tokens, mask, valid).item() == 0.0
    prediction = tokens.clone()
    prediction[:, 5:10, 2:] += 2.0
    valid[:, 7] = False  # a token of masked (bad) pixels: not a target
    assert masked_mse(prediction, tokens, mask, valid).item() == pytest.approx(4.0 * 20 / 22)


def test_line_emphasis_weights_the_line_and_not_the_continuum():
    """A sloped continuum with one emission line 3 pixels wide and 5 bad pixels, by hand."""
    n = 200
    flux = torch.linspace(2.0, 4.0, n)[None].clone()
    flux[0, 100:103] += torch.tensor([3.0, 6.0, 3.0])
    ivar = torch.ones_like(flux)
    ivar[0, 20:25] = 0.0  # standardised to 0, far below the continuum there (-1.4)
    tokens, _ = tokenize(flux, ivar)
    weight = line_emphasis(flux, ivar, strength=2.0)
    assert weight.shape == tokens.shape
    assert torch.equal(weight[:, 0], torch.ones(1, 22))  # the statistics token keeps weight 1
    # token t + 1 holds segment t, pixels 10 t to 10 t + 19, in columns 2 to 21
    pixel_weight = weight[0, 1::2, 2:].reshape(-1)  # pixels 0-199, from segments 0, 2, ..., 18
    # a 9-pixel running median follows a straight continuum exactly: weight 1 there
    assert torch.allclose(pixel_weight[30:96], torch.ones(66))
    assert torch.allclose(pixel_weight[111:], torch.ones(89))
    # the median leaves bad pixels out (with their zeros it would drop towards 0 beside them)
    assert torch.equal(pixel_weight[20:25], torch.ones(5)) and pixel_weight[10:35].max().item() < 2.0
    # the line: only 3 of the 199 good pixels depart, so the mean departure is small and their
    # departures are clipped at MAX_DEPARTURE times it
    assert torch.allclose(pixel_weight[100:103], torch.full((3,), 1.0 + 2.0 * MAX_DEPARTURE))
    assert torch.allclose(line_emphasis(flux, ivar, strength=0.0), torch.ones_like(tokens))


def test_weighted_masked_mse_is_a_weighted_mean():
    tokens = torch.zeros(1, 3, 22)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    mask = torch.tensor([[False, True, True]])
    prediction = tokens.clone()
    prediction[0, 1] = 1.0  # squared error 1 on token 1, 0 on token 2
    weight = torch.ones_like(tokens)
    assert masked_mse(prediction, tokens, mask, valid, weight).item() == pytest.approx(0.5)
    weight[0, 1] = 3.0  # token 1 counts three times: 3 / (3 + 1)
    assert masked_mse(prediction, tokens, mask, valid, weight).item() == pytest.approx(0.75)


def test_interpolation_baseline_is_exact_on_a_straight_line():
    flux = torch.linspace(1.0, 5.0, 500)[None].repeat(2, 1)
    ivar = torch.ones_like(flux)
    tokens, valid = tokenize(flux, ivar)
    mask = chunk_mask(2, tokens.shape[1], 3, 6, torch.Generator().manual_seed(3))
    baseline = interpolation_baseline(flux, ivar, mask)
    assert masked_mse(baseline, tokens, mask, valid).item() < 1e-10


def test_paper_preset_has_43_2_million_parameters():
    model = SpecFormer(SpecFormerConfig.preset("paper"))
    assert count_parameters(model) == pytest.approx(43.2e6, rel=0.01)


def test_initialisation_follows_the_paper():
    config = SpecFormerConfig.preset("laptop")
    model = SpecFormer(config)
    weight = model.blocks[0].mlp[2].weight  # fan_in 4 * embed
    expected = 1 / math.sqrt(2 * weight.shape[1] * config.n_layers)
    assert weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(model.blocks[0].mlp[2].bias == 0)


def test_forward_shapes_and_bidirectional_attention():
    model = SpecFormer(SpecFormerConfig(embed_dim=32, n_layers=2, n_heads=4)).eval()
    tokens = torch.randn(2, 50, 22)
    hidden, reconstruction = model(tokens)
    assert hidden.shape == (2, 50, 32) and reconstruction.shape == (2, 50, 22)
    changed = tokens.clone()
    changed[:, -1] += 1.0  # a change at the end reaches the first position: attention is not causal
    assert not torch.allclose(model(changed)[0][:, 0], hidden[:, 0])
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randn(1, 801, 22))
