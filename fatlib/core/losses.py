"""Losses on logits (never sigmoid + BCE: unsafe under mixed precision)."""

from __future__ import annotations

import torch

from fatlib.core.config import LOSSES


def clip_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per clip, (B,): the mean over every class (and crop) of a clip.

    logits, targets: (B, n_classes) or (B, n_crops, n_classes).
    """
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), targets, reduction="none")
    return loss.flatten(1).mean(dim=1)


def clip_softmax_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per clip, (B,), against the targets normalised to sum to 1 (the
    mean over a clip's crops).

    Classes compete for one unit of probability, so the loss ranks a clip's own labels above
    its other classes - what lwlrap scores - instead of calibrating each class on its own.
    logits, targets: (B, n_classes) or (B, n_crops, n_classes).
    """
    mass = targets.sum(dim=-1, keepdim=True)
    # A clip without labels has nothing to rank: its row of the target is all zeros, loss 0.
    share = targets / mass.clamp_min(torch.finfo(targets.dtype).tiny)
    loss = -(share * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    return loss.reshape(len(loss), -1).mean(dim=1)


def clip_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = LOSSES[0]) -> torch.Tensor:
    """The per-clip loss (B,) of the named kind: "bce" or "softmax"."""
    if kind == "bce":
        return clip_bce(logits, targets)
    if kind == "softmax":
        return clip_softmax_ce(logits, targets)
    raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                  kind: str = LOSSES[0]) -> torch.Tensor:
    """The batch loss: per-clip losses averaged with per-clip weights (noisy clips weigh less)."""
    return (clip_loss(logits, targets, kind) * weights).sum() / weights.sum()
