"""PANNs' Cnn10 (Kong et al. 2020) for small data, and the frame-attention head for polyphony.

Input (batch, in_channels, n_mels, n_frames) float with n_mels, n_frames >= 16 (four 2x2
poolings); output logits (batch, n_classes) — use BCEWithLogits. `cnn10` pools as PANNs' Cnn10
does (`TimePool`, then a 512-wide hidden layer); the `-att` variants score every frame and take
an attention-weighted mean of the frame logits per class (PANNs' decision-level attention), so
overlapping sounds are each weighed in the frames where they sound.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from fatlib.core.config import ConfigError
from fatlib.core.models import register_model
from fatlib.core.models.resnet import ResNet, TimePool, he_init

WIDTHS = (64, 128, 256, 512)  # channels of Cnn10's four conv blocks
MIN_SIZE = 2 ** len(WIDTHS)  # mel bins and frames a crop needs: every block halves both


@register_model("cnn10")
def cnn10(n_classes: int, *, in_channels: int = 1, dropout: float = 0.2,
          head_dropout: float = 0.5) -> Cnn10:
    """PANNs' Cnn10: four conv blocks, time pooling, a 512-wide hidden layer (~4.9 M
    parameters); dropout after every block and around the hidden layer, PANNs' rates."""
    head = nn.Sequential(TimePool(), nn.Dropout(head_dropout), nn.Linear(WIDTHS[-1], 512),
                         nn.ReLU(inplace=True), nn.Dropout(head_dropout),
                         nn.Linear(512, n_classes))
    return Cnn10(head, in_channels=in_channels, dropout=dropout)


@register_model("cnn10-att")
def cnn10_att(n_classes: int, *, in_channels: int = 1, dropout: float = 0.2,
              head_dropout: float = 0.5) -> Cnn10:
    """Cnn10's conv blocks with the frame-attention head."""
    head = FrameAttention(WIDTHS[-1], n_classes, dropout=head_dropout)
    return Cnn10(head, in_channels=in_channels, dropout=dropout)


@register_model("resnet18-att")
def resnet18_att(n_classes: int, *, in_channels: int = 1, dropout: float = 0.0) -> ResNet:
    """ResNet-18 with the frame-attention head in place of global average pooling."""
    model = ResNet((2, 2, 2, 2), n_classes, in_channels=in_channels,
                   pool=FrameAttention(512, n_classes, dropout=dropout))
    # The head already ends in class logits, so ResNet's linear layer gives way (its dropout
    # is 0: the head's own dropout acts on the frames instead).
    model.fc = nn.Identity()
    return model


class FrameAttention(nn.Module):
    """(B, C, freq, time) -> logits (B, n_classes): class logits for every frame, averaged over
    time with per-class softmax weights (PANNs' decision-level attention).

    Frame features are the mean over frequency, through a hidden 1x1 layer (PANNs' fc1).
    Unlike PANNs' AttBlock, neither the attention nor the frame scores are squashed or
    clamped: a weighted mean of logits is a logit, for BCEWithLogits.
    """

    def __init__(self, in_features: int, n_classes: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Conv1d(in_features, in_features, 1)
        self.relu = nn.ReLU(inplace=True)
        self.attention = nn.Conv1d(in_features, n_classes, 1)
        self.classes = nn.Conv1d(in_features, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip logits (B, n_classes) for any number of time steps."""
        frames = self.dropout(self.relu(self.hidden(self.dropout(x.mean(dim=2)))))
        weights = torch.softmax(self.attention(frames), dim=-1)  # (B, n_classes, time)
        return (weights * self.classes(frames)).sum(dim=-1)


class ConvBlock(nn.Module):
    """PANNs' ConvBlock: two 3x3 convolutions with batch norm and ReLU, then 2x2 average
    pooling."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_planes, H, W) -> (B, planes, H // 2, W // 2)."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.pool(self.relu(self.bn2(self.conv2(x))))


class Cnn10(nn.Module):
    """Four conv blocks (64 to 512 channels, dropout after each) and a head mapping their
    (B, 512, n_mels // 16, n_frames // 16) features to logits.

    Convolutions get He initialisation as the ResNets do (PANNs uses Xavier); the head's linear
    and 1x1 layers keep torch's defaults, as ResNet's linear layer does. PANNs' batch norm over
    mel bins is left out: fatlib normalises its inputs, and it would fix n_mels.
    """

    def __init__(self, head: nn.Module, *, in_channels: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(i, o) for i, o in pairwise((in_channels, *WIDTHS)))
        self.dropout = nn.Dropout(dropout)
        self.head = head
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, n_mels, n_frames) -> logits (B, n_classes)."""
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ConfigError(f"the cnn10 models need crops of at least {MIN_SIZE} mel bins and "
                              f"{MIN_SIZE} frames, got {x.shape[-2]} x {x.shape[-1]}")
        for block in self.blocks:
            x = self.dropout(block(x))
        return self.head(x)

    def first_conv(self) -> nn.Conv2d:
        """The first block's first convolution, whose filters the report draws."""
        return self.blocks[0].conv1

    def cam_layer(self) -> nn.Module:
        """The last conv block: the feature maps Grad-CAM weighs."""
        return self.blocks[-1]
