"""ResNet-18/34 (BasicBlock) in plain torch for log-mel "images", registered by name.

Input (batch, in_channels, n_mels, n_frames) float; output logits (batch, n_classes) — use
BCEWithLogits, never sigmoid + BCE. Global average pooling (or the `-timepool` variants' head)
makes any crop length valid.
"""

from __future__ import annotations

import torch
from torch import nn

from fatlib.core.models import register_model


@register_model("resnet18")
def resnet18(n_classes: int, *, in_channels: int = 1, dropout: float = 0.0) -> ResNet:
    """ResNet-18: two BasicBlocks per stage (He et al. 2016, as torchvision builds it)."""
    return ResNet((2, 2, 2, 2), n_classes, in_channels=in_channels, dropout=dropout)


@register_model("resnet34")
def resnet34(n_classes: int, *, in_channels: int = 1, dropout: float = 0.0) -> ResNet:
    """ResNet-34: 3, 4, 6 and 3 BasicBlocks per stage."""
    return ResNet((3, 4, 6, 3), n_classes, in_channels=in_channels, dropout=dropout)


@register_model("resnet18-timepool")
def resnet18_timepool(n_classes: int, *, in_channels: int = 1, dropout: float = 0.0) -> ResNet:
    """ResNet-18 with a head that keeps time structure (`TimePool`) instead of global
    average pooling."""
    return ResNet((2, 2, 2, 2), n_classes, in_channels=in_channels, dropout=dropout,
                  pool=TimePool())


@register_model("resnet34-timepool")
def resnet34_timepool(n_classes: int, *, in_channels: int = 1, dropout: float = 0.0) -> ResNet:
    """ResNet-34 with the time-pooling head."""
    return ResNet((3, 4, 6, 3), n_classes, in_channels=in_channels, dropout=dropout,
                  pool=TimePool())


def he_init(model: nn.Module) -> None:
    """He initialisation for 2-D convolutions, unit-scale batch norm (torchvision's scheme);
    linear and 1-D layers keep torch's defaults."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TimePool(nn.Module):
    """(B, C, freq, time) -> (B, C): the mean over frequency, then max + mean over time (as
    in PANNs and FAT2019 solutions: a short loud event is not averaged away over the crop)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, any number of time steps."""
        x = x.mean(dim=2)
        return x.amax(dim=2) + x.mean(dim=2)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Standard ResNet stem and stages, configurable input channels, linear multi-label head."""

    def __init__(
        self,
        blocks_per_stage: tuple[int, ...],
        n_classes: int,
        *,
        in_channels: int = 1,
        dropout: float = 0.0,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, in_planes = [], 64
        for i, n_blocks in enumerate(blocks_per_stage):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Global average pooling unless another head is given: (B, C, freq, time) -> (B, C).
        self.pool = pool or nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_planes, n_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, n_mels, n_frames) -> logits (B, n_classes)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.pool(x)))

    def first_conv(self) -> nn.Conv2d:
        """The stem convolution, whose filters the report draws."""
        return self.conv1

    def cam_layer(self) -> nn.Module:
        """The last residual stage: the feature maps Grad-CAM weighs."""
        return self.layer4
