"""lwlrap (label-weighted label-ranking average precision), FAT2019's metric, vectorised.

Ties: a true label tied in score with other labels is ranked after all of them (the
pessimistic convention of sklearn's label_ranking_average_precision_score). The official
competition code instead breaks ties by argsort order; on tie-free scores the two agree exactly.
Rows without any true label carry no weight and are excluded.
"""

from __future__ import annotations

import numpy as np


def lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    """lwlrap of scores (n_clips, n_classes) against 0/1 truth of the same shape."""
    precisions, positives = _label_precisions(truth, scores)
    n_labels = positives.sum()
    if n_labels == 0:
        raise ValueError("lwlrap: truth has no positive label")
    return float(precisions.sum() / n_labels)


def per_class_lwlrap(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-class lwlrap, class weight) arrays; their dot product is lwlrap."""
    precisions, positives = _label_precisions(truth, scores)
    labels_per_class = positives.sum(axis=0)
    if labels_per_class.sum() == 0:
        raise ValueError("lwlrap: truth has no positive label")
    per_class = precisions.sum(axis=0) / np.maximum(1, labels_per_class)
    weights = labels_per_class / labels_per_class.sum()
    return per_class, weights


def labels_on_top(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per clip, whether its true labels score above all its other classes (a clip of k labels:
    they are its top k), ties counted against, as lwlrap counts them."""
    positives = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    lowest_true = np.where(positives, scores, np.inf).min(axis=1)
    highest_false = np.where(positives, -np.inf, scores).max(axis=1)
    return positives.any(axis=1) & (lowest_true > highest_false)


def _label_precisions(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the rank of each true label ((n, C), zero elsewhere) and the truth mask."""
    positives = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    if positives.shape != scores.shape or scores.ndim != 2:
        raise ValueError(f"lwlrap: truth {positives.shape} and scores {scores.shape} differ")
    if np.isnan(scores).any():
        raise ValueError("lwlrap: scores contain NaN")
    n_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_scores = np.take_along_axis(scores, order, axis=1)
    ranked_truth = np.take_along_axis(positives, order, axis=1)
    # Each position's rank is the last position holding the same score (ties rank last).
    last_of_tie = np.ones_like(ranked_truth)
    last_of_tie[:, :-1] = ranked_scores[:, :-1] != ranked_scores[:, 1:]
    marks = np.where(last_of_tie, np.arange(n_classes), n_classes)
    tie_end = np.minimum.accumulate(marks[:, ::-1], axis=1)[:, ::-1]
    hits = np.take_along_axis(np.cumsum(ranked_truth, axis=1), tie_end, axis=1)
    ranked_precision = np.where(ranked_truth, hits / (tie_end + 1.0), 0.0)
    precisions = np.empty_like(ranked_precision)
    np.put_along_axis(precisions, order, ranked_precision, axis=1)
    return precisions, positives
