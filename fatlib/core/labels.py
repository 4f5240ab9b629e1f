"""Class vocabulary and multi-hot targets: the one place label strings become tensors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fatlib.core.errors import UserError


class LabelError(UserError, ValueError):
    """A label is malformed or outside the class vocabulary."""


def parse_labels(field: str | float | None) -> list[str]:
    """Split a Kaggle `labels` field ("Bark,Meow") into class names; empty/NaN gives []."""
    if field is None or (isinstance(field, float) and np.isnan(field)):
        return []
    return [name.strip() for name in str(field).split(",") if name.strip()]


def join_labels(labels: Iterable[str]) -> str:
    """Inverse of `parse_labels`: names joined by commas, as in FAT2019's CSVs."""
    return ",".join(labels)


def vocabulary(
    submission_columns: Sequence[str] | None = None,
    label_lists: Iterable[Sequence[str]] = (),
) -> list[str]:
    """Class list: sample_submission's columns after `fname` when given, else sorted union."""
    if submission_columns is not None:
        classes = [c for c in submission_columns if c != "fname"]
    else:
        classes = sorted({name for labels in label_lists for name in labels})
    if not classes:
        raise LabelError("the class vocabulary is empty")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise LabelError(f"duplicate class names in the vocabulary: {duplicates}")
    return list(classes)


def multi_hot(
    label_lists: Sequence[Sequence[str]],
    classes: Sequence[str],
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """(n_clips, n_classes) float32 targets; an unknown label raises LabelError naming the clip."""
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(label_lists), len(classes)), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        for name in labels:
            if name not in index:
                where = names[row] if names is not None else f"row {row}"
                raise LabelError(f"{where}: label {name!r} is not in the class vocabulary")
            targets[row, index[name]] = 1.0
    return targets
