"""Losses on logits (never sigmoid + BCE: unsafe under mixed precision)."""

from __future__ import annotations

import torch


def clip_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per clip, (B,): the mean over every class (and crop) of a clip.

    logits, targets: (B, n_classes) or (B, n_crops, n_classes).
    """
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), targets, reduction="none")
    return loss.flatten(1).mean(dim=1)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor,
                 weights: torch.Tensor) -> torch.Tensor:
    """The batch loss: per-clip BCE averaged with per-clip weights (noisy clips weigh less)."""
    return (clip_bce(logits, targets) * weights).sum() / weights.sum()
