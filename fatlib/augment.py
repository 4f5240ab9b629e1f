"""Per-batch input preparation on the training worker: crops, normalisation, mixup, SpecAugment.

Log-mels arrive as (n_mels, n_frames) dB arrays of any length; batches leave as
(batch, channels, n_mels, crop_frames) float32 tensors. Randomness comes only from the
numpy / torch generators passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalisation:
    """How dB values become network inputs.

    "clip": each clip standardised by its own mean/std (1 channel); "global": by the training
    set's (1 channel); "color": the seed's per-clip min-max uint8, 3 identical channels.
    """

    mode: str = "clip"
    mean: float = 0.0
    std: float = 1.0

    @property
    def channels(self) -> int:
        """Input channels the model needs for this normalisation."""
        return 3 if self.mode == "color" else 1

    def clip(self, logmel: np.ndarray) -> np.ndarray:
        """Normalise one whole clip (n_mels, n_frames) -> float32, before cropping."""
        if self.mode == "color":
            return seed_color(logmel).astype(np.float32) / 255.0
        if self.mode == "global":
            return (logmel.astype(np.float32) - self.mean) / self.std
        if self.mode == "clip":
            x = logmel.astype(np.float32)
            return (x - x.mean()) / (x.std() + 1e-6)
        raise ValueError(f"unknown normalisation {self.mode!r}")

    def to_dict(self) -> dict:
        """JSON form for the model artifact."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std}


def seed_color(logmel: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The seed kernel's mono_to_color on one channel: per-clip standardise, min-max to uint8."""
    x = logmel.astype(np.float32)
    x = (x - x.mean()) / (x.std() + eps)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= eps:
        return np.zeros(x.shape, dtype=np.uint8)
    return (255 * (x - lo) / (hi - lo)).astype(np.uint8)


def random_starts(n_frames: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """One random window start per clip: inside long clips, a placement offset for short ones.

    Negative starts mean the clip sits at -start inside a padded crop.
    """
    slack = np.asarray(n_frames) - crop
    offsets = rng.integers(0, np.abs(slack) + 1)
    return np.where(slack >= 0, offsets, -offsets)


def tta_starts(n_frames: int, crop: int, n_crops: int) -> np.ndarray:
    """n_crops window starts spread over the whole clip (evenly spaced; shifted for short clips)."""
    slack = n_frames - crop
    if n_crops == 1:
        return np.array([slack // 2])  # one centred crop
    return np.round(np.linspace(0, slack, n_crops)).astype(int)


def crop_batch(clips: Sequence[np.ndarray], starts: Sequence[int], crop: int) -> np.ndarray:
    """(batch, n_mels, crop) float32 windows; short clips are padded with their minimum value.

    The minimum is the clip's silence floor (what the seed's zero-padded audio turns into).
    """
    out = np.empty((len(clips), clips[0].shape[0], crop), dtype=np.float32)
    for i, (clip, start) in enumerate(zip(clips, starts, strict=True)):
        if start >= 0:
            out[i] = clip[:, start : start + crop]
        else:
            out[i] = clip.min()
            out[i, :, -start : -start + clip.shape[1]] = clip
    return out


def mixup(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend inputs, targets and loss weights with a random partner, lambda ~ Beta(alpha, alpha).

    One lambda per sample, folded to >= 0.5 so the original sample stays the dominant one.
    """
    lam = rng.beta(alpha, alpha, size=x.shape[0])
    lam = torch.from_numpy(np.maximum(lam, 1 - lam)).to(x.dtype)
    perm = torch.from_numpy(rng.permutation(x.shape[0]))
    lx = lam.view(-1, *([1] * (x.dim() - 1)))
    ly = lam.view(-1, 1)
    return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm], lam * w + (1 - lam) * w[perm]


def spec_augment(
    x: torch.Tensor,
    rng: np.random.Generator,
    n_freq_masks: int = 2,
    max_freq: int = 16,
    n_time_masks: int = 2,
    max_time: int = 16,
) -> torch.Tensor:
    """Zero random mel bands and time spans per sample (Park et al., 2019), in place.

    x: (batch, channels, n_mels, n_frames), already normalised so that 0 is the mean.
    """
    batch, _, n_mels, n_frames = x.shape
    for axis, count, width, size in ((2, n_freq_masks, max_freq, n_mels),
                                     (3, n_time_masks, max_time, n_frames)):
        width = min(width, size)
        for _ in range(count):
            widths = rng.integers(0, width + 1, size=batch)
            starts = rng.integers(0, size - widths + 1)
            index = np.arange(size)
            mask = (index >= starts[:, None]) & (index < (starts + widths)[:, None])
            shape = (batch, 1, size, 1) if axis == 2 else (batch, 1, 1, size)
            x.masked_fill_(torch.from_numpy(mask).view(shape), 0.0)
    return x
