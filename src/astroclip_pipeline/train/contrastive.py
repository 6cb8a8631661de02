"""The symmetric InfoNCE (CLIP) loss of AstroCLIP, on one device or across many.

For a batch of N image-spectrum pairs with L2-normalised embeddings x_i (images) and y_j
(spectra), logits s_ij = scale · x_i·y_j, and the loss is the mean of the two cross-entropies
that pick each spectrum's own image among the N images and each image's own spectrum:

    L = 1/(2N) Σ_i [ -log softmax_j(s_ij)_i  -  log softmax_j(s_ji)_i ]

The negatives of a pair are the other N - 1 pairs of the batch, so with several GPUs the batch
that matters is the global one: every rank gathers all ranks' embeddings and computes the loss
over the global batch; the gradient flows back through its own slice only (the other slices
arrive as plain tensors), and ``world_size`` rescales the loss for the backward pass so that
DDP's averaging of the ranks' gradients gives exactly the single-device gradient.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

#: AstroCLIP's fixed logit scale (temperature 1 / 15.5).
LOGIT_SCALE = 15.5


def gather_with_local_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``x`` concatenated in rank order, this rank's slice keeping its gradient; and the
    world size (``x`` itself and 1 outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 1
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts), len(parts)


def clip_loss(image: torch.Tensor, spectrum: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of row-aligned ``image`` and ``spectrum`` embeddings (batch, dim), normalised here."""
    image = F.normalize(image.float(), dim=-1)
    spectrum = F.normalize(spectrum.float(), dim=-1)
    logits = logit_scale * image @ spectrum.T
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def distributed_clip_loss(
    image: torch.Tensor, spectrum: torch.Tensor, logit_scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, loss to report) over the global batch of all ranks.

    The reported loss equals ``clip_loss`` of the concatenated global batch; the one to
    backpropagate is it times the world size (see the module's docstring).
    """
    all_image, world_size = gather_with_local_grad(image)
    all_spectrum, _ = gather_with_local_grad(spectrum)
    loss = clip_loss(all_image, all_spectrum, logit_scale)
    return loss * world_size, loss.detach()
