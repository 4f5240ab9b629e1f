"""Scoring clips with a trained network over several crops (validation and test-time augmentation).

A clip of any length is cut into n_crops windows spread over it (`tta_starts`); the network
scores each window; `combine` turns the per-window logits into one score per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fatlib.core.config import TTA_COMBINATIONS
from fatlib.core.inputs import Normalisation, crop_batch, tta_starts


def tta_logits(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray],
    norm: Normalisation,
    crop_frames: int,
    n_crops: int,
    device: torch.device,
) -> torch.Tensor:
    """Logits (n_clips, n_crops, n_classes) of normalised clips (n_mels, n_frames each)."""
    windows = [clip for clip in clips for _ in range(n_crops)]
    starts = [s for clip in clips for s in tta_starts(clip.shape[1], crop_frames, n_crops)]
    x = torch.from_numpy(crop_batch(windows, starts, crop_frames)).unsqueeze(1)
    x = x.expand(-1, norm.channels, -1, -1)
    chunk = 256 if device.type == "cuda" else 32  # CPU: small batches stay in cache
    outputs = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=device.type == "cuda"):
        for part in x.split(chunk):
            part = part.to(device)
            if device.type == "cuda":
                part = part.contiguous(memory_format=torch.channels_last)
            outputs.append(model(part).float().cpu())
    return torch.cat(outputs).view(len(clips), n_crops, -1)


def combine(logits: torch.Tensor, how: str = TTA_COMBINATIONS[0]) -> np.ndarray:
    """Per-clip probabilities (n_clips, n_classes) from (n_clips, n_crops, n_classes) logits."""
    if how == "mean_sigmoid":
        return torch.sigmoid(logits).mean(dim=1).numpy()
    if how == "max_sigmoid":
        return torch.sigmoid(logits).amax(dim=1).numpy()
    if how == "mean_logit":
        return torch.sigmoid(logits.mean(dim=1)).numpy()
    raise ValueError(f"unknown combination {how!r}; choose from {TTA_COMBINATIONS}")
