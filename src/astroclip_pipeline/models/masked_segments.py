"""Masked-segment filling, the spectrum transformer's pretraining task, and its baseline.

Contiguous chunks of tokens are hidden (set to zero) and the model must reconstruct them. The
mask is carried as an explicit boolean tensor: the official code recovers masked positions as
``input != target``, which silently drops every position whose data are zero (masked pixels,
or any exact zero). Here a position is a target when it was masked *and* holds real data.
"""

import numpy as np
import torch

from ..models.specformer import PATCH_SIZE, PATCH_STRIDE, detokenize, standardise, tokens_from_standardised


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


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked tokens' real-data entries only (unmasked ones ignored)."""
    weight = (mask[..., None] & valid).to(prediction.dtype)
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


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
