"""The "Conv+Att" spectrum encoder: convolutions, then attention pooling over wavelength.

The encoder of spender (Melchior et al. 2023, AJ 166, 74; github.com/pmelchior/spender,
``spender/model.py``, class ``SpectrumEncoder``), after Serrà et al. (2018): convolutional blocks
(Conv1d, InstanceNorm, PReLU, dropout), max-pooling between them; the last block's channels are
split in half into values h and attention logits a, the logits are softmaxed over wavelength and
the spectrum is summarised as sum_λ h · softmax(a); an MLP maps that summary, with optional auxiliary
scalars appended (spender's ``aux``, there the redshift), to the outputs.

Two sizes (``ConvAttentionConfig.preset``):

- "astroclip": the supervised "Conv+Att" baseline of the AstroCLIP v2 table (PolymathicAI/AstroCLIP,
  ``downstream_tasks/property_estimation/baselines/modules.py``): four blocks of 8, 16, 16, 32
  filters with kernels 5, 10, 20, 40, pooled by 5, 10 and 20; MLP [32, 32] with PReLU and a linear
  output. ~30k parameters.
- "spender": spender's own encoder: three blocks of 128, 256, 512 filters with kernels 5, 11, 21,
  pooled by 5 and 11; MLP [128, 64, 32]. ~4M parameters.

Written here rather than installed: the ``spender`` package pulls 16 packages the project does not
otherwise need (accelerate, datasets, nflows, tensorboard, ...), and its encoder also expects an
``instrument`` object; the network is the short module below. Unlike spender, the input weights
(ivar) take no branch of their own: masked pixels arrive as 0 after ``specformer.standardise``
(the AstroCLIP baseline does the same), and the MLP's last layer is linear (spender's ends in a
LeakyReLU, which would bend a regression target).
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConvAttentionConfig:
    filters: tuple[int, ...] = (8, 16, 16, 32)
    kernels: tuple[int, ...] = (5, 10, 20, 40)
    hidden: tuple[int, ...] = (32, 32)
    dropout: float = 0.0

    @classmethod
    def preset(cls, name: str) -> "ConvAttentionConfig":
        presets = {
            "astroclip": cls(),
            "spender": cls((128, 256, 512), (5, 11, 21), (128, 64, 32)),
        }
        if name not in presets:
            raise ValueError(f"unknown Conv+Att preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]


class InstanceNorm(nn.Module):
    """Each (spectrum, channel) z-scored over wavelength: ``nn.InstanceNorm1d`` without affine
    parameters or running statistics (its defaults), written out because torch computes that one
    through a batch norm of batch x channels rows, three times slower on a CPU for these shapes."""

    eps = 1e-5  # nn.InstanceNorm1d's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps)


def _conv_block(in_channels: int, channels: int, kernel: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_channels, channels, kernel, padding=kernel // 2),
        InstanceNorm(),
        nn.PReLU(channels),
        nn.Dropout(dropout),
    )


class SpectrumConvAttention(nn.Module):
    """(batch, n_pixels) standardised spectra -> (batch, n_outputs).

    Every block but the last is followed by a max-pool as wide as its kernel, so the attention
    runs over n_pixels / prod(pools) positions (spender's and AstroCLIP's choice).
    """

    def __init__(self, config: ConvAttentionConfig, n_outputs: int, n_aux: int = 0):
        super().__init__()
        if len(config.filters) != len(config.kernels) or len(config.filters) < 2:
            raise ValueError(f"Conv+Att needs as many kernels as filters (at least 2), got {config}")
        if config.filters[-1] % 2:
            raise ValueError(f"the last block's {config.filters[-1]} channels must split into values and logits")
        self.config = config
        self.n_aux = n_aux
        channels = (1, *config.filters)
        self.blocks = nn.ModuleList(
            _conv_block(c_in, c_out, k, config.dropout)
            for c_in, c_out, k in zip(channels[:-1], channels[1:], config.kernels, strict=True)
        )
        self.pools = nn.ModuleList(nn.MaxPool1d(k, padding=k // 2) for k in config.kernels[:-1])
        widths = (config.filters[-1] // 2 + n_aux, *config.hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.PReLU(w_out), nn.Dropout(config.dropout)]
        self.mlp = nn.Sequential(*layers, nn.Linear(widths[-1], n_outputs))

    def attention(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (batch, channels / 2, positions) and attention weights (same shape, sum 1 over positions)."""
        x = spectra.unsqueeze(1)
        for block, pool in zip(self.blocks[:-1], self.pools, strict=True):
            x = pool(block(x))
        values, logits = self.blocks[-1](x).chunk(2, dim=1)
        return values, torch.softmax(logits, dim=-1)

    def forward(self, spectra: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """``aux`` (batch, n_aux) joins the pooled features before the MLP (None when n_aux is 0)."""
        if spectra.ndim != 2:
            raise ValueError(f"expected spectra of shape (batch, n_pixels), got {tuple(spectra.shape)}")
        n_aux = 0 if aux is None else aux.shape[-1]
        if n_aux != self.n_aux:
            raise ValueError(f"this Conv+Att takes {self.n_aux} auxiliary inputs, got {n_aux}")
        values, weights = self.attention(spectra)
        pooled = (values * weights).sum(dim=-1)
        return self.mlp(pooled if aux is None else torch.cat([pooled, aux], dim=-1))
