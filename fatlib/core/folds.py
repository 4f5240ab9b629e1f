"""Multi-label stratified K-fold: iterative stratification (Sechidis et al., 2011), seeded."""

from __future__ import annotations

import numpy as np


def stratified_folds(targets: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..n_folds-1) per clip, so every class is spread evenly over the folds.

    targets: (n_clips, n_classes) 0/1. Rarest labels are placed first; each clip goes to the
    fold that still needs that label most (ties: the fold needing most clips, then random).
    """
    targets = np.asarray(targets) > 0
    n, n_classes = targets.shape
    if n_folds < 2:
        raise ValueError("need at least 2 folds")
    if n < n_folds:
        raise ValueError(f"{n} clips cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # random tie-breaking among clips, fixed by the seed
    need_label = np.tile(targets.sum(0) / n_folds, (n_folds, 1))  # (folds, classes)
    need_clips = np.full(n_folds, n / n_folds)
    fold = np.full(n, -1)
    remaining = targets[order].copy()
    unplaced = np.ones(n, dtype=bool)
    while unplaced.any():
        counts = remaining[unplaced].sum(0)
        if counts.max() == 0:  # only unlabelled clips are left
            for i in np.flatnonzero(unplaced):
                f = _pick(need_clips, need_clips, rng)
                fold[order[i]], unplaced[i] = f, False
                need_clips[f] -= 1
            break
        rarest = np.flatnonzero(counts == counts[counts > 0].min())
        label = rng.choice(rarest)
        for i in np.flatnonzero(unplaced & remaining[:, label]):
            f = _pick(need_label[:, label], need_clips, rng)
            fold[order[i]], unplaced[i] = f, False
            need_label[f] -= remaining[i]
            need_clips[f] -= 1
    return fold


def _pick(need: np.ndarray, tie_break: np.ndarray, rng: np.random.Generator) -> int:
    """Fold with the largest need; ties by the largest tie_break, then at random."""
    best = np.flatnonzero(need == need.max())
    if len(best) > 1:
        best = best[tie_break[best] == tie_break[best].max()]
    return int(rng.choice(best))
