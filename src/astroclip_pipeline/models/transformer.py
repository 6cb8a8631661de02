"""The transformer block both encoders are built of: the spectrum transformer and the image ViT.

A pre-LayerNorm block (x + attn(LN(x)), then x + MLP(LN(x))) with bidirectional multi-head
self-attention and a GELU MLP of 4x the width, as in GPT-2 and ViT. Two additions serve the ViT
of DINOv2 (Oquab et al. 2023, facebookresearch/dinov2, ``dinov2/layers/block.py``) and are off
for the spectrum transformer, so its parameters and their names do not change:

- LayerScale (Touvron et al. 2021, CaiT): each branch is multiplied by a learned per-channel
  vector initialised small (1e-5 in DINOv2), so a deep stack starts close to the identity;
- stochastic depth (Huang et al. 2016, "drop path"): in training each sample skips a branch with
  probability ``drop_path`` and the kept ones are scaled by 1 / (1 - p), so the expectation holds.
  Up to p = 0.1 each sample is kept or dropped by its own coin (the textbook form); above it, as
  DINOv2's ``Block`` does, a random subset of exactly (1 - p) of the batch goes through the branch
  and its residual is added back scaled by batch / subset: the same expectation, and the dropped
  rows cost nothing (30% of the student's block FLOPs at the ViT-L's p = 0.3).
"""

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention through PyTorch's fused scaled_dot_product_attention."""

    def __init__(self, embed_dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, length, width) -> q, k, v, each (batch, heads, length, width / heads)."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        return tuple(t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(x.shape))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) of every head: (batch, heads, length, length); rows sum to 1.

        The fused kernel never forms this matrix, so it is computed here for pictures only.
        """
        q, k, _ = self._heads(x)
        return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)


class LayerScale(nn.Module):
    """x * gamma, a learned per-channel scale (CaiT); named ``gamma`` as in DINOv2."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability p in training."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x)).

    ``layerscale`` (an initial value) and ``drop_path`` (a probability) are off by default; when
    off they add no parameters, so state dicts without them still load. ``norm_eps``: the
    LayerNorms' epsilon (PyTorch's 1e-5; DINOv2's ViTs use 1e-6, and published weights expect it).
    """

    def __init__(
        self,
        embed_dim: int,
        n_heads: int,
        dropout: float = 0.0,
        mlp_ratio: float = 4.0,
        layerscale: float | None = None,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.ln_attn = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.attn = SelfAttention(embed_dim, n_heads, dropout)
        self.ls_attn = LayerScale(embed_dim, layerscale) if layerscale else nn.Identity()
        self.ln_mlp = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, embed_dim),
            nn.Dropout(dropout),
        )
        self.ls_mlp = LayerScale(embed_dim, layerscale) if layerscale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def _attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls_attn(self.attn(self.ln_attn(x)))

    def _mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls_mlp(self.mlp(self.ln_mlp(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_path.p > SUBSET_DROP_PATH_ABOVE:
            x = add_residual_on_subset(x, self._attention_branch, self.drop_path.p)
            return add_residual_on_subset(x, self._mlp_branch, self.drop_path.p)
        x = x + self.drop_path(self._attention_branch(x))
        return x + self.drop_path(self._mlp_branch(x))


#: The drop-path rate above which whole rows skip a branch's computation (DINOv2's threshold).
SUBSET_DROP_PATH_ABOVE = 0.1


def add_residual_on_subset(x: torch.Tensor, branch, p: float) -> torch.Tensor:
    """x + branch(x) for a random (1 - p) share of the rows of ``x`` (batch, ...), scaled by
    batch / rows kept, and x alone for the others: stochastic depth computed on the kept rows only.
    The rows are drawn on ``x``'s device, so a GPU step needs nothing from the host."""
    batch = x.shape[0]
    kept = max(int(batch * (1.0 - p)), 1)
    rows = torch.randperm(batch, device=x.device)[:kept]
    residual = branch(x.index_select(0, rows))
    return torch.index_add(x, 0, rows, residual.to(x.dtype), alpha=batch / kept)
