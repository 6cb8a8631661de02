"""ResNet image backbones with torchvision's parameter names, written in the project.

torchvision has no CPU build on our package index, so the network is written here; its module
names and shapes are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``; blocks with
``conv1``/``bn1``/.../``downsample.0``/``downsample.1``; the stride on the 3x3 convolution of a
bottleneck, "ResNet v1.5"), so a torchvision ResNet-50 state dict, such as the MoCo v2 encoder of
Stein et al. (2021), loads into it unchanged.
"""

from dataclasses import dataclass

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetConfig:
    block: str = "bottleneck"
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    in_channels: int = 3

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features: 8 x width x the block's expansion (2048 for ResNet-50)."""
        return 8 * self.width * (4 if self.block == "bottleneck" else 1)

    @classmethod
    def preset(cls, name: str) -> "ResNetConfig":
        presets = {
            "paper": cls("bottleneck", (3, 4, 6, 3), 64),  # ResNet-50: 2048-d features
            "laptop": cls("basic", (1, 1, 1, 1), 16),  # 128-d features, ~0.3M parameters
            # torchvision's resnet18, the AstroCLIP v2 supervised image baseline: 512-d, 11.2M parameters
            "resnet18": cls("basic", (2, 2, 2, 2), 64),
        }
        if name not in presets:
            raise ValueError(f"unknown image-encoder preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]


class ResNet(nn.Module):
    """Images (batch, 3, H, W) -> pooled features (batch, ``feature_dim``); ``fc`` is the head."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[config.block]
        self._in = config.width
        self.conv1 = nn.Conv2d(config.in_channels, config.width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(block, config.width, config.layers[0], 1)
        self.layer2 = self._layer(block, 2 * config.width, config.layers[1], 2)
        self.layer3 = self._layer(block, 4 * config.width, config.layers[2], 2)
        self.layer4 = self._layer(block, 8 * config.width, config.layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = config.feature_dim
        self.fc: nn.Module = nn.Identity()
        self._init_weights()

    def _layer(self, block, channels: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in != channels * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in, channels * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * block.expansion),
            )
        layers = [block(self._in, channels, stride, downsample)]
        self._in = channels * block.expansion
        layers += [block(self._in, channels) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation: Kaiming-normal convolutions, unit BatchNorm.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features before ``fc`` (2048-d for ResNet-50)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The MoCo v2 projection head as Stein et al. attach it: fc.0 Linear, fc.1 ReLU, fc.2 Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
