"""Scoring clips with a trained network over several crops (validation and test-time augmentation).

A clip of any length is cut into n_crops windows spread over it (`tta_starts`) straight from its
stored float16 bytes; the windows of a whole batch of clips go through the model (a
`core.frontend.Tagger`: its frontend normalises them on the device) in as few forwards as
fit; `combine` turns the per-window logits into one score per class. `whole_clip_logits`
instead puts each clip through the model whole, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fatlib.core.config import TTA_COMBINATIONS
from fatlib.core.frontend import Tagger
from fatlib.core.inputs import crop_rows, tta_starts

# Windows per forward: a GPU takes large batches; on a CPU small ones stay in cache.
_CHUNK = {"cuda": 1024, "cpu": 32}
# Fewest clips whose statistics `standardise_classes` trusts: below it a class's mean and
# spread over the clips are mostly the few clips' own labels, not a bias of the domain.
MIN_STANDARDISED_CLIPS = 32
_LOGIT_EPS = 1e-6  # keeps saturated probabilities finite as logits


def tta_logits(
    model: Tagger,
    logmels: Sequence[bytes],
    n_frames: Sequence[int],
    stats: np.ndarray,
    n_mels: int,
    crop_frames: int,
    n_crops: int,
    device: torch.device,
) -> torch.Tensor:
    """Logits (n_clips, n_crops, n_classes) on the CPU of stored log-mels (float16 bytes,
    (n_mels, n_frames) each) whose whole-clip stats are stats (n_clips, 4)."""
    frames = np.asarray(n_frames, dtype=np.int64)
    rows = np.repeat(np.arange(len(frames)), n_crops)
    starts = np.concatenate([tta_starts(int(n), crop_frames, n_crops) for n in frames])
    cuda = device.type == "cuda"
    crops = torch.empty((len(rows), n_mels, crop_frames), dtype=torch.float16, pin_memory=cuda)
    crop_rows([logmels[i] for i in rows], frames[rows], starts, n_mels, crop_frames,
              stats[rows, 2], out=crops.numpy())
    window_stats = torch.from_numpy(np.ascontiguousarray(stats[rows], dtype=np.float32))
    logits = _forward(model, crops, window_stats, device, _CHUNK.get(device.type, _CHUNK["cpu"]))
    return logits.view(len(frames), n_crops, -1)


def whole_clip_logits(
    model: Tagger,
    logmels: Sequence[bytes],
    n_frames: Sequence[int],
    stats: np.ndarray,
    n_mels: int,
    min_frames: int,
    device: torch.device,
) -> torch.Tensor:
    """Logits (n_clips, 1, n_classes) on the CPU, in input order, of stored log-mels (float16
    bytes, (n_mels, n_frames) each) each taken whole as one input; a clip shorter than
    min_frames is centred in min_frames padded with its floor, as a crop pads it."""
    frames = np.asarray(n_frames, dtype=np.int64)
    lengths = np.maximum(frames, min_frames)
    starts = (frames - lengths) // 2  # 0: the whole clip; negative: centred in its padding
    cuda = device.type == "cuda"
    # A forward holds as many frames as tta_logits' chunk of min_frames windows does.
    budget = _CHUNK.get(device.type, _CHUNK["cpu"]) * min_frames
    order, outputs = [], []
    for length in np.unique(lengths):  # clips of one length batch without padding
        same = np.flatnonzero(lengths == length)
        forwards = min(len(same), -(-len(same) * int(length) // budget))
        for chunk in np.array_split(same, forwards):
            inputs = torch.empty((len(chunk), n_mels, int(length)), dtype=torch.float16,
                                 pin_memory=cuda)
            crop_rows([logmels[i] for i in chunk], frames[chunk], starts[chunk], n_mels,
                      int(length), stats[chunk, 2], out=inputs.numpy())
            chunk_stats = torch.from_numpy(np.ascontiguousarray(stats[chunk], dtype=np.float32))
            outputs.append(_forward(model, inputs, chunk_stats, device, len(chunk)))
            order.append(chunk)
    back = torch.from_numpy(np.argsort(np.concatenate(order)))  # grouped order -> input order
    return torch.cat(outputs)[back].unsqueeze(1)


def clip_logits(model: Tagger, logmels: Sequence[bytes], n_frames: Sequence[int],
                stats: np.ndarray, n_mels: int, crop_frames: int, n_crops: int | None,
                device: torch.device) -> torch.Tensor:
    """Logits (n_clips, n_crops, n_classes) of n_crops TTA windows per clip, or with n_crops
    None (n_clips, 1, n_classes) of each clip whole."""
    if n_crops is None:
        return whole_clip_logits(model, logmels, n_frames, stats, n_mels, crop_frames, device)
    return tta_logits(model, logmels, n_frames, stats, n_mels, crop_frames, n_crops, device)


def combine(logits: torch.Tensor, how: str = TTA_COMBINATIONS[0]) -> np.ndarray:
    """Per-clip probabilities (n_clips, n_classes) from (n_clips, n_crops, n_classes) logits."""
    if how == "mean_sigmoid":
        return torch.sigmoid(logits).mean(dim=1).numpy()
    if how == "max_sigmoid":
        return torch.sigmoid(logits).amax(dim=1).numpy()
    if how == "mean_logit":
        return torch.sigmoid(logits.mean(dim=1)).numpy()
    raise ValueError(f"unknown combination {how!r}; choose from {TTA_COMBINATIONS}")


def ensemble(scores: np.ndarray, standardise: bool = False) -> np.ndarray:
    """Members' scores (n_models, n_clips, n_classes) -> (n_clips, n_classes): their mean
    probability, or with standardise, `standardise_classes`."""
    if standardise:
        return standardise_classes(scores)
    return np.asarray(scores).mean(axis=0, dtype=np.float64).astype(np.float32)


def standardise_classes(scores: np.ndarray) -> np.ndarray:
    """Scores (n_models, n_clips, n_classes) in [0, 1] -> (n_clips, n_classes) in (0, 1): each
    model's logits standardised per class over the clips, averaged over the models, sigmoid."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _LOGIT_EPS, 1 - _LOGIT_EPS)
    logits = np.log(p) - np.log1p(-p)
    # A new speaker or microphone lifts or lowers whole classes for every clip; per class over
    # the clips, that bias is the mean and the spread, and a clip's ranking of its own labels
    # (what lwlrap scores) is freed of it. A class scored alike on every clip stays at 0.
    spread = logits.std(axis=1, keepdims=True)
    z = (logits - logits.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    return (1 / (1 + np.exp(-z.mean(axis=0)))).astype(np.float32)


def _forward(model: Tagger, inputs: torch.Tensor, stats: torch.Tensor, device: torch.device,
             chunk: int) -> torch.Tensor:
    """Logits (B, n_classes) on the CPU of inputs (B, n_mels, frames) float16 dB whose clips'
    stats are stats (B, 4): through the model on the device, `chunk` inputs per forward."""
    cuda = device.type == "cuda"
    if cuda:
        stats = stats.pin_memory()
    outputs = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for part, part_stats in zip(inputs.split(chunk), stats.split(chunk), strict=True):
            logits = model(part.to(device, non_blocking=True),
                           part_stats.to(device, non_blocking=True))
            outputs.append(logits.float())
    return torch.cat(outputs).cpu()
