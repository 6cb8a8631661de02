"""Masked-segment filling, the spectrum transformer's pretraining task, and its baseline.

Contiguous chunks of tokens are hidden (set to zero) and the model must reconstruct them. The
mask is carried as an explicit boolean tensor: the official code recovers masked positions as
``input != target``, which silently drops every position whose data are zero (masked pixels,
or any exact zero). Here a position is a target when it was masked *and* holds real data.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..models.specformer import (
    PATCH_SIZE,
    PATCH_STRIDE,
    detokenize,
    segment_tokens,
    standardise,
    tokens_from_standardised,
)

#: Pixels in the running median that ``line_emphasis`` takes as the continuum: 9 pixels are 115 Å
#: on the default run's grid (rebin 16), wide against a line (1-2 pixels), narrow against the continuum.
CONTINUUM_WINDOW = 9
#: Departures from the continuum count up to this many times the spectrum's mean departure, so one
#: cosmic ray or sky residual cannot take over a batch's loss.
MAX_DEPARTURE = 10.0


def chunk_mask(
    batch: int, n_tokens: int, n_chunks: int, chunk_length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, n_tokens) boolean mask with ``n_chunks`` runs of ``chunk_length`` tokens per row.

    The segment tokens (all but the first, statistics token) are cut into ``n_chunks`` equal
    sections and one chunk is placed at a random offset inside each, so chunks never overlap and
    exactly ``n_chunks * chunk_length`` tokens are masked in every row.
    """
    section = (n_tokens - 1) // n_chunks
    if chunk_length > section:
        raise ValueError(
            f"{n_chunks} chunks of {chunk_length} tokens do not fit in {n_tokens - 1} segment tokens "
            f"(at most {section} per chunk); lower config key 'pretrain_spectra.mask_chunk_length' or "
            "'pretrain_spectra.mask_chunks'"
        )
    offsets = torch.randint(0, section - chunk_length + 1, (batch, n_chunks), generator=generator)
    starts = 1 + torch.arange(n_chunks) * section + offsets
    index = (starts[..., None] + torch.arange(chunk_length)).reshape(batch, -1)
    mask = torch.zeros(batch, n_tokens, dtype=torch.bool)
    return mask.scatter_(1, index, True)


def hide(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's input: masked tokens set to zero."""
    return tokens.masked_fill(mask[..., None], 0.0)


def masked_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    entry_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error over the masked tokens' real-data entries only (unmasked ones ignored).

    ``entry_weight`` (the tokens' shape, e.g. from ``line_emphasis``) weights the entries; the mean
    is then a weighted mean, so a weight of 1 everywhere gives the plain masked MSE.
    """
    weight = (mask[..., None] & valid).to(prediction.dtype)
    if entry_weight is not None:
        weight = weight * entry_weight
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def line_emphasis(flux: torch.Tensor, ivar: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-entry weights (batch, n_tokens, 22) that make the masked loss count narrow features more.

    Each pixel's weight is 1 + ``strength`` x its departure from the spectrum's running median over
    ``CONTINUUM_WINDOW`` pixels, in units of that spectrum's mean departure (clipped at
    ``MAX_DEPARTURE``): a line stands out from the local continuum, the continuum does not. The
    statistics token keeps weight 1. It is self-supervised: no redshift or line list is used.

    Why: with the plain MSE, a small transformer trained for minutes fills masked segments with the
    continuum and never the lines, although lines carry a third of the masked squared error (the
    mask-filling table's near-lines score stays above interpolation's), because placing a line
    needs the redshift to a pixel. Counting line pixels more makes learning them pay early
    (BENCHMARKS.md, "The default run: time against R²"). Not in the papers: their 43M-parameter
    model learns lines from the plain MSE, so ``strength`` 0 (the schema's default) is theirs.
    """
    standard, _, _ = standardise(flux, ivar)
    # bad pixels (0 after standardising) must not pull the median: they are left out of it
    known = torch.where(ivar > 0, standard, torch.full_like(standard, float("nan")))
    pad = CONTINUUM_WINDOW // 2
    windows = F.pad(known[:, None], (pad, pad), mode="replicate")[:, 0].unfold(-1, CONTINUUM_WINDOW, 1)
    continuum = windows.nanmedian(dim=-1).values
    good = (ivar > 0).to(standard.dtype)
    departure = torch.nan_to_num((standard - continuum).abs()) * good
    mean_departure = departure.sum(dim=-1, keepdim=True) / good.sum(dim=-1, keepdim=True).clamp_min(1.0)
    departure = departure / mean_departure.clamp_min(1e-6)
    return segment_tokens(1.0 + strength * departure.clamp(max=MAX_DEPARTURE), fill=1.0)


def visible_pixels(mask: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """(batch, n_pixels) True where some unmasked segment token covers the pixel."""
    segment_visible = (~mask[:, 1:]).to(torch.float32)  # (batch, n_segments)
    n_segments = segment_visible.shape[1]
    covered = torch.zeros(mask.shape[0], n_pixels)
    for offset in range(PATCH_SIZE):
        pixels = torch.arange(n_segments) * PATCH_STRIDE + offset
        covered[:, pixels] = torch.maximum(covered[:, pixels], segment_visible)
    return covered > 0


def interpolation_baseline(flux: torch.Tensor, ivar: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tokens predicted by interpolating linearly across each masked gap, from the visible good pixels.

    This is what "no model" can do with the same information the transformer sees; comparing the
    two masked-region MSEs says how much the model learned about spectra.
    """
    standard, mean, std = standardise(flux, ivar)
    visible = visible_pixels(mask, flux.shape[1]) & (ivar > 0)
    filled = standard.clone().numpy()
    pixels = np.arange(flux.shape[1])
    for row in range(flux.shape[0]):
        known = visible[row].numpy()
        if known.sum() >= 2:
            filled[row, ~known] = np.interp(pixels[~known], pixels[known], filled[row, known])
    # The statistics token is never masked, so the baseline keeps the true mean and std.
    return tokens_from_standardised(torch.from_numpy(filled), mean, std)


def reconstruct_spectrum(prediction: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, n_pixels: int):
    """Standardised spectrum with the masked tokens replaced by the model's prediction."""
    merged = torch.where(mask[..., None], prediction, tokens)
    return detokenize(merged, n_pixels)
