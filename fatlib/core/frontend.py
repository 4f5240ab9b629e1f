"""The network's frontend: how dB log-mel crops become its input (normalisation, channels).

`Normalisation` is what the model artifact records; `Frontend` is the torch module that applies
it, and `Tagger` holds frontend and network together, so the model an artifact loads into takes
dB crops as stored, as PANNs keeps its log-mel frontend inside the model. Training applies the
same frontend in two steps around the augmentations (`core.inputs.to_device`); validation,
inference and the report call the tagger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fatlib.core.config import NORMALISATIONS
from fatlib.core.features import time_delta

_EPS = 1e-6  # the seed kernel's epsilon, in std and in the min-max span


@dataclass(frozen=True)
class Normalisation:
    """How dB values become network inputs.

    "clip": each clip standardised by its own mean/std (1 channel); "global": by the training
    set's (1 channel); "color": the seed's per-clip min-max uint8, 3 identical channels.
    """

    mode: str = "clip"
    mean: float = 0.0
    std: float = 1.0
    deltas: bool = False  # 3 channels: the normalised log-mel, its delta and delta-delta
    # Each window minus its own mean per mel bin over time (cepstral mean normalisation, per
    # window): a speaker's or a microphone's fixed spectral colouring is removed, so the
    # network sees how each band moves rather than how loud it sits.
    centre_bands: bool = False

    @property
    def channels(self) -> int:
        """Input channels the model needs for this normalisation."""
        return 3 if self.mode == "color" or self.deltas else 1

    def clip(self, logmel: np.ndarray) -> np.ndarray:
        """Normalise one whole clip (n_mels, n_frames) -> float32: the reference semantics
        that `Frontend.normalise` reproduces per crop."""
        if self.mode == "color":
            return seed_color(logmel).astype(np.float32) / 255.0
        if self.mode == "global":
            return (logmel.astype(np.float32) - self.mean) / self.std
        if self.mode == "clip":
            x = logmel.astype(np.float32)
            return (x - x.mean()) / (x.std() + _EPS)
        raise ValueError(f"unknown normalisation {self.mode!r}; choose from {NORMALISATIONS}")

    def to_dict(self) -> dict:
        """JSON form for the model artifact."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "deltas": self.deltas,
                "centre_bands": self.centre_bands}


class Frontend(nn.Module):
    """dB crops (B, n_mels, frames) of clips whose whole-clip stats are (B, 4) = (mean, std,
    min, max) -> network input (B, channels, n_mels, frames) float32, on any device. No
    parameters: everything it applies is its `Normalisation`."""

    def __init__(self, norm: Normalisation) -> None:
        super().__init__()
        self.norm = norm

    @property
    def channels(self) -> int:
        """Input channels of the network behind it."""
        return self.norm.channels

    def forward(self, crops: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Network input (B, channels, n_mels, frames) of dB crops (B, n_mels, frames)."""
        return self.stack(self.normalise(crops, stats))

    def normalise(self, crops: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 1, n_mels, frames) float32: equal to cropping
        `Normalisation.clip`'s output (then, with centre_bands, each mel bin minus its mean
        over the window)."""
        x = self._scale(crops, stats)
        if self.norm.centre_bands:
            x = x.sub_(x.mean(dim=-1, keepdim=True))
        return x.unsqueeze(1)

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """Network input (B, channels, n_mels, frames) from normalised crops (B, 1, ...): the
        deltas when asked for, else identical channels as a view (no copies); channels-last
        on a GPU, the layout the network takes there."""
        if self.norm.deltas:
            x = torch.cat([x, time_delta(x, 1), time_delta(x, 2)], dim=1)
        else:
            x = x.expand(-1, self.channels, -1, -1)
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def _scale(self, crops: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """The per-clip affine (or uint8) map of `normalise`, before any band centring."""
        # One float32 buffer worked in place (the same operations, in the same order, as the
        # reference): 4x faster on a CPU than a fresh tensor per step.
        norm = self.norm
        x = crops.to(torch.float32, copy=True)
        mean, std, low, high = (s.view(-1, 1, 1) for s in stats.float().unbind(dim=1))
        if norm.mode == "global":
            return x.sub_(norm.mean).div_(norm.std)
        if norm.mode == "clip":
            return x.sub_(mean).div_(std + _EPS)
        if norm.mode != "color":
            raise ValueError(f"unknown normalisation {norm.mode!r}; choose from {NORMALISATIONS}")
        scale = std + _EPS
        lo, hi = (low - mean) / scale, (high - mean) / scale  # the standardised clip's range
        span = (hi.double() - lo.double()).float()  # the seed takes it in float64
        levels = x.sub_(mean).div_(scale).sub_(lo).mul_(255).div_(span).floor_()
        return levels.masked_fill_(span <= _EPS, 0.0).div_(255.0)


class Tagger(nn.Module):
    """A trained model as the artifact holds it: its frontend, then its network; logits
    (B, n_classes) of dB crops (B, n_mels, frames) and their clips' stats (B, 4)."""

    def __init__(self, frontend: Frontend, network: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.network = network

    def forward(self, crops: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) of dB crops (B, n_mels, frames) with stats (B, 4)."""
        return self.network(self.frontend(crops, stats))


def seed_color(logmel: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """The seed kernel's mono_to_color on one channel: per-clip standardise, min-max to uint8."""
    x = logmel.astype(np.float32)
    x = (x - x.mean()) / (x.std() + eps)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= eps:
        return np.zeros(x.shape, dtype=np.uint8)
    return (255 * (x - lo) / (hi - lo)).astype(np.uint8)
