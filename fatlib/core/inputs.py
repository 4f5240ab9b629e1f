"""Network inputs from stored log-mels: normalisation, crops, TTA windows, batch assembly.

Log-mels arrive as (n_mels, n_frames) dB arrays of any length; batches leave as
(batch, channels, n_mels, crop_frames) float32 tensors. Randomness comes only from the numpy
generator passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fatlib.core.augment import Compose
from fatlib.core.config import NORMALISATIONS
from fatlib.core.features import decode_logmel
from fatlib.core.labels import multi_hot


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
        raise ValueError(f"unknown normalisation {self.mode!r}; choose from {NORMALISATIONS}")

    def to_dict(self) -> dict:
        """JSON form for the model artifact."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class InputSpec:
    """What turns stored rows into a training batch: mel bins, crop length, scaling, transforms."""

    n_mels: int
    crop_frames: int
    norm: Normalisation
    augment: Compose = Compose()


def training_batch(batch: dict, spec: InputSpec, classes: Sequence[str],
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature rows (logmel, n_frames, labels, weight) -> inputs (B, C, n_mels, crop),
    targets (B, n_classes) and loss weights (B,): random crops, then the augmentations."""
    clips = [spec.norm.clip(decode_logmel(b, spec.n_mels, n))
             for b, n in zip(batch["logmel"], batch["n_frames"], strict=True)]
    starts = random_starts(batch["n_frames"], spec.crop_frames, rng)
    x = torch.from_numpy(crop_batch(clips, starts, spec.crop_frames)).unsqueeze(1)
    x = x.expand(-1, spec.norm.channels, -1, -1).contiguous()
    y = torch.from_numpy(multi_hot(batch["labels"], classes))
    w = torch.from_numpy(np.asarray(batch["weight"], dtype=np.float32))
    return spec.augment(x, y, w, rng)


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
