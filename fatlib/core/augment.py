"""Batch augmentations as small transform objects, each applied with a probability.

A transform maps (x (B, C, n_mels, frames), y (B, n_classes), w (B,), rng) to the same triple,
on whatever device the tensors are (the training worker runs them on its GPU): the few random
numbers per batch come from the numpy generator passed in, the work is tensor ops. Transforms
never write into their input (it may be a view with shared channels). `compose` builds a pipeline
from (name, parameters) pairs, so a config names its augmentations instead of coding them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Transform(ABC):
    """A batch augmentation that fires with probability p; subclasses say what it does."""

    p: float = field(default=1.0, kw_only=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                 rng: np.random.Generator) -> Batch:
        """The transformed batch (or the batch unchanged, with probability 1 - p)."""
        if not _applies(self.p, rng):
            return x, y, w
        return self.apply(x, y, w, rng)

    @abstractmethod
    def apply(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              rng: np.random.Generator) -> Batch:
        """The transformed batch (every augmentation says what it does here)."""


@dataclass(frozen=True)
class Mixup(Transform):
    """Blend inputs, targets and loss weights with a random partner, lambda ~ Beta(alpha, alpha).

    One lambda per sample, folded to >= 0.5 so the original sample stays the dominant one.
    """

    alpha: float = 0.4

    def apply(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              rng: np.random.Generator) -> Batch:
        """The mixed batch."""
        return mixup(x, y, w, self.alpha, rng)


@dataclass(frozen=True)
class SpecAugment(Transform):
    """Zero random mel bands and time spans per sample (Park et al., 2019)."""

    n_freq_masks: int = 2
    max_freq: int = 16
    n_time_masks: int = 2
    max_time: int = 16

    def apply(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              rng: np.random.Generator) -> Batch:
        """The masked batch."""
        return spec_augment(x, rng, self.n_freq_masks, self.max_freq, self.n_time_masks,
                            self.max_time), y, w


@dataclass(frozen=True)
class FrequencyShift(Transform):
    """Move each sample's spectrogram up or down the mel axis by a random whole number of bins.

    Above ~1 kHz the mel scale is close to logarithmic, so a shift of k bins scales those
    frequencies by a near-constant ratio: the change of pitch and formants between speakers
    (vocal tract length perturbation, Jaitly & Hinton, 2013)."""

    max_bins: int = 4

    def apply(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              rng: np.random.Generator) -> Batch:
        """The shifted batch."""
        return frequency_shift(x, rng, self.max_bins), y, w


# Every augmentation a config can name; a new one is a class above and a line here.
AUGMENTATIONS: dict[str, type[Transform]] = {"mixup": Mixup, "specaugment": SpecAugment,
                                  "frequency_shift": FrequencyShift}


@dataclass(frozen=True)
class Compose:
    """Transforms applied in order; the empty composition leaves a batch unchanged."""

    transforms: tuple = ()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                 rng: np.random.Generator) -> Batch:
        """The batch after every transform."""
        for transform in self.transforms:
            x, y, w = transform(x, y, w, rng)
        return x, y, w


def compose(steps: Sequence[tuple[str, dict[str, Any]]]) -> Compose:
    """A pipeline from (name, parameters) pairs, e.g. [("mixup", {"alpha": 0.4})]."""
    transforms = []
    for name, params in steps:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {sorted(AUGMENTATIONS)}")
        transforms.append(AUGMENTATIONS[name](**params))
    return Compose(tuple(transforms))


def mixup(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float, rng: np.random.Generator
) -> Batch:
    """Blend inputs, targets and loss weights with a random partner, lambda ~ Beta(alpha, alpha)."""
    lam = rng.beta(alpha, alpha, size=x.shape[0])
    lam = host_to(np.maximum(lam, 1 - lam), x.device).to(x.dtype)
    perm = host_to(rng.permutation(x.shape[0]), x.device)
    lx = lam.view(-1, *([1] * (x.dim() - 1)))
    # lerp(partner, own, lam) = lam * own + (1 - lam) * partner, in one pass.
    return (torch.lerp(x[perm], x, lx), torch.lerp(y[perm], y, lam.view(-1, 1).to(y.dtype)),
            torch.lerp(w[perm], w, lam.to(w.dtype)))


def spec_augment(
    x: torch.Tensor,
    rng: np.random.Generator,
    n_freq_masks: int = 2,
    max_freq: int = 16,
    n_time_masks: int = 2,
    max_time: int = 16,
) -> torch.Tensor:
    """x with random mel bands and time spans of each sample set to zero (a new tensor).

    x: (batch, channels, n_mels, n_frames), already normalised so that 0 is the mean.
    """
    batch, _, n_mels, n_frames = x.shape
    masks = []
    for count, width, size in ((n_freq_masks, max_freq, n_mels),
                               (n_time_masks, max_time, n_frames)):
        width = min(width, size)
        mask = np.zeros((batch, size), dtype=bool)
        index = np.arange(size)
        for _ in range(count):
            widths = rng.integers(0, width + 1, size=batch)
            starts = rng.integers(0, size - widths + 1)
            mask |= (index >= starts[:, None]) & (index < (starts + widths)[:, None])
        masks.append(host_to(mask, x.device))
    bands, spans = masks  # one masked_fill for all masks: (B, 1, n_mels, 1) | (B, 1, 1, frames)
    return x.masked_fill(bands[:, None, :, None] | spans[:, None, None, :], 0.0)


def frequency_shift(x: torch.Tensor, rng: np.random.Generator, max_bins: int) -> torch.Tensor:
    """x with each sample moved by s ~ U{-max_bins..max_bins} mel bins (a new tensor): bin b
    takes bin b - s; the bins left empty repeat the edge bin, as a spectrum beyond its band.

    x: (batch, channels, n_mels, n_frames)."""
    batch, channels, n_mels, n_frames = x.shape
    shifts = host_to(rng.integers(-max_bins, max_bins + 1, size=batch), x.device)
    source = (torch.arange(n_mels, device=x.device)[None, :] - shifts[:, None]).clamp(0, n_mels - 1)
    return x.gather(2, source[:, None, :, None].expand(batch, channels, n_mels, n_frames))


def host_to(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array (random draws, indices) on device without waiting for the device's
    queue: from pageable memory a copy to a GPU first waits for every queued kernel, so on a
    GPU it goes pinned and non-blocking."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _applies(p: float, rng: np.random.Generator) -> bool:
    """Whether a transform of probability p fires; p = 1 draws nothing, so seeded runs made
    before probabilities existed keep their random streams."""
    return p >= 1.0 or rng.random() < p
