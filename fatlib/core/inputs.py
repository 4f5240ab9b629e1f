"""Network inputs from stored log-mels: crops, TTA windows, batch assembly.

Stored rows hold a clip's full log-mel as float16 bytes plus its dB statistics (mean, std, min,
max). A batch is built in two halves: on the host, each row's crop is sliced straight from its
bytes (a view, no whole-clip copy) into one (B, n_mels, crop) float16 array, pinned when bound
for a GPU; on the device, sound mixing, the model's frontend (`core.frontend`: the
normalisation, an affine map per crop from the whole clip's statistics, and the input channels)
and, between its two steps, the augmentations. Randomness comes only from the numpy generator
passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fatlib.core.augment import Compose, frequency_shift
from fatlib.core.config import PADDINGS
from fatlib.core.features import CLIP_STATS
from fatlib.core.frontend import Frontend, Normalisation
from fatlib.core.labels import multi_hot
from fatlib.core.mixing import SoundMix


@dataclass(frozen=True)
class InputSpec:
    """What turns stored rows into a training batch: mel bins, crop length, scaling, transforms."""

    n_mels: int
    crop_frames: int
    norm: Normalisation
    augment: Compose = Compose()
    pad: str = "silence"  # short clips in training crops: one of PADDINGS
    noisy_smoothing: float = 0.0  # rows marked noisy train on t (1 - s) + s / 2
    resized_crop: float = 0.0  # crops span crop x U(1 - r, 1 + r) frames, resized to crop
    mix: SoundMix | None = None  # crops mixed as sounds add, in dB before the normalisation
    source_shift: int = 0  # each crop moved up to this many mel bins before the mixing


@dataclass
class HostBatch:
    """A batch's host half: crops (B, n_mels, crop) float16 dB, whole-clip stats (B, 4),
    targets (B, n_classes) and loss weights (B,) — pinned when bound for a GPU."""

    crops: torch.Tensor
    stats: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor


def host_batch(batch: dict, spec: InputSpec, classes: Sequence[str], rng: np.random.Generator,
               *, pin: bool = False) -> HostBatch:
    """Feature rows (logmel, n_frames, labels, weight[, stats]) -> one random crop per clip."""
    frames = np.asarray(batch["n_frames"])
    stats = batch_stats(batch, spec.n_mels)
    crops = torch.empty((len(frames), spec.n_mels, spec.crop_frames), dtype=torch.float16,
                        pin_memory=pin)
    spans = resized_spans(len(frames), spec.crop_frames, spec.resized_crop, rng)
    starts = random_starts(frames, spec.crop_frames if spans is None else spans, rng)
    wrap = _wrapped(spec.pad, len(frames), rng)
    # A repeated clip starts at a random point of itself: clips of exactly the crop's length
    # (fsdd-fat's, FAT2019's shortest: preprocessing pads to 2 s) would otherwise always open
    # at their onset.
    phases = None if wrap is None else rng.integers(0, 1 << 30, len(frames))
    crop_rows(batch["logmel"], frames, starts, spec.n_mels, spec.crop_frames, stats[:, 2],
              out=crops.numpy(), wrap=wrap, spans=spans, phases=phases)
    targets = torch.from_numpy(soft_targets(multi_hot(batch["labels"], classes),
                                            batch.get("noisy"), spec.noisy_smoothing))
    weights = torch.from_numpy(np.asarray(batch["weight"], dtype=np.float32))
    tensors = [torch.from_numpy(stats), targets, weights]
    if pin:
        tensors = [t.pin_memory() for t in tensors]
    return HostBatch(crops, *tensors)


def to_device(host: HostBatch, spec: InputSpec, rng: np.random.Generator,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The device half: inputs (B, C, n_mels, crop) float32 through the model's frontend, with
    the augmentations applied between its two steps; targets (B, n_classes); weights (B,)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    crops, stats, y, w = (move(t) for t in (host.crops, host.stats, host.targets, host.weights))
    if spec.source_shift > 0:
        # Before the mixing, so the two sources of a mix move apart like two voices; a gather
        # over mel bins commutes with the per-crop normalisation, so unmixed crops are shifted
        # as the augmentation after it would.
        crops = frequency_shift(crops[:, None], rng, spec.source_shift)[:, 0]
    if spec.mix is not None:
        crops, stats, y, w = spec.mix(crops, stats, y, w, rng)
    frontend = Frontend(spec.norm)
    # Augmentations act alike on every channel: applied to one, then the identical channels
    # are a view of it (no copies; the model's first convolution reads them).
    x, y, w = spec.augment(frontend.normalise(crops, stats), y, w, rng)
    return frontend.stack(x), y, w


def training_batch(batch: dict, spec: InputSpec, classes: Sequence[str],
                   rng: np.random.Generator, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature rows -> (inputs, targets, weights) on device (default CPU): both halves."""
    device = device or torch.device("cpu")
    host = host_batch(batch, spec, classes, rng, pin=device.type == "cuda")
    return to_device(host, spec, rng, device)


def soft_targets(targets: np.ndarray, noisy: np.ndarray | None, smoothing: float) -> np.ndarray:
    """Targets with label smoothing on the noisy rows only: t -> t (1 - s) + s / 2, in [0, 1]."""
    if noisy is None or smoothing == 0:
        return targets
    rows = np.asarray(noisy, dtype=bool)
    targets[rows] = targets[rows] * (1 - smoothing) + smoothing / 2
    return targets


def batch_stats(batch: dict, n_mels: int) -> np.ndarray:
    """(B, 4) float32 whole-clip stats, from the feature rows' stats columns."""
    return np.stack([np.asarray(batch[name], dtype=np.float32) for name in CLIP_STATS], 1)


def crop_rows(logmels: Sequence[bytes], n_frames: Sequence[int], starts: Sequence[int],
              n_mels: int, crop: int, floors: Sequence[float],
              out: np.ndarray | None = None, wrap: np.ndarray | None = None,
              spans: np.ndarray | None = None,
              phases: np.ndarray | None = None) -> np.ndarray:
    """(B, n_mels, crop) float16 windows sliced from float16 log-mel bytes; a clip shorter than
    the window sits at -start, padded with its floor (its minimum dB: what the seed's
    zero-padded audio turns into). Where wrap is true, a clip whose audible part (`audible`)
    is shorter than the window is that part repeated instead, placed as the clip would be and
    moved on by phases[i] frames. With spans, window i covers spans[i] frames and is resized in
    time to crop frames."""
    if out is None:
        out = np.empty((len(starts), n_mels, crop), dtype=np.float16)
    for i, (data, frames, start) in enumerate(zip(logmels, n_frames, starts, strict=True)):
        clip = np.frombuffer(data, dtype="<f2").reshape(n_mels, int(frames))
        span = crop if spans is None else int(spans[i])
        window = out[i] if span == crop else np.empty((n_mels, span), dtype=np.float16)
        first, end = audible(clip, floors[i]) if wrap is not None and wrap[i] else (0, 0)
        if 0 < end - first < span:
            offset = start + (0 if phases is None else int(phases[i]))
            window[:] = clip[:, first + (np.arange(span) + offset) % (end - first)]
        elif frames >= span:
            window[:] = clip[:, start : start + span]
        else:
            window[:] = floors[i]
            window[:, -start : -start + clip.shape[1]] = clip
        if span != crop:
            out[i] = resize_time(window, crop)
    return out


def audible(clip: np.ndarray, floor: float) -> tuple[int, int]:
    """[first, end) frames of a log-mel (n_mels, frames) between its first and last frame
    louder than its floor in some band: the clip without the silence that preprocessing's
    padding to min_seconds put around it; (0, 0) when the whole clip is at the floor."""
    loud = np.flatnonzero(clip.max(axis=0) > floor)
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)


def resized_spans(n: int, crop: int, scale: float, rng: np.random.Generator) -> np.ndarray | None:
    """Source window lengths of n random resized crops, crop x U(1 - scale, 1 + scale) frames
    (None when scale is 0: plain crops, and no draw from rng)."""
    if scale == 0:
        return None
    return np.maximum(1, np.round(crop * rng.uniform(1 - scale, 1 + scale, n))).astype(int)


def resize_time(window: np.ndarray, frames: int) -> np.ndarray:
    """window (n_mels, span) linearly resampled to (n_mels, frames) along time: what
    torch's interpolate(mode="linear", align_corners=False) computes."""
    span = window.shape[1]
    pos = np.clip((np.arange(frames) + 0.5) * (span / frames) - 0.5, 0, span - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, span - 1)
    frac = (pos - lo).astype(np.float32)
    x = window.astype(np.float32)
    return x[:, lo] * (1 - frac) + x[:, hi] * frac


def _wrapped(pad: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Which of n short clips are repeated rather than padded with silence (None: none);
    draws from rng only in the random mode, so the other modes keep their streams."""
    if pad == "silence":
        return None
    if pad == "wrap":
        return np.ones(n, dtype=bool)
    if pad == "random":
        return rng.random(n) < 0.5
    raise ValueError(f"unknown padding {pad!r}; choose from {PADDINGS}")


def random_starts(n_frames: np.ndarray, crop: int | np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """One random window start per clip (crop: one length, or one per clip): inside long
    clips, a placement offset for short ones.

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
