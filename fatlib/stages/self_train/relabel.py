"""Relabelling the noisy split with a teacher's scores: which clips keep their labels, which
take the teacher's, which are left out; written as <out>/noisy_labels.csv, then
<out>/relabel.json (the step's completion)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fatlib.core.labels import join_labels
from fatlib.io import predictions, storage
from fatlib.io.feature_store import FeatureStore
from fatlib.stages.train.config import TrainConfig

NOISY_LABELS = "noisy_labels.csv"
RELABEL = "relabel.json"  # written after NOISY_LABELS: the relabelling step's completion


@dataclass(frozen=True)
class Relabelling:
    """What relabelling did to the noisy split's clips at an agreement threshold."""

    kept: int  # with their own labels: the teacher scores each of them >= agree
    relabelled: int  # to the classes the teacher scores >= agree
    dropped: int  # the teacher is confident of no class (or did not score the clip)
    agree: float

    @property
    def total(self) -> int:
        """The noisy split's clips."""
        return self.kept + self.relabelled + self.dropped


def relabel(scores: pd.DataFrame, labels: Mapping[str, Sequence[str]], classes: Sequence[str],
            agree: float) -> tuple[dict[str, list[str]], Relabelling]:
    """The noisy clips worth training on, fname -> labels, and the counts.

    scores: fname + one column per class, the teacher's score (0-1) per clip; labels: each noisy
    clip's own labels. A clip keeps its labels when every one scores >= agree, else takes the
    classes scoring >= agree (in class order) when its top class does, else is dropped (so is a
    clip the teacher did not score).
    """
    table = scores[list(classes)].to_numpy(np.float64)
    by_fname = dict(zip(scores["fname"], table, strict=True))
    column = {name: i for i, name in enumerate(classes)}
    kept: dict[str, list[str]] = {}
    assigned: dict[str, list[str]] = {}
    for fname in sorted(labels):
        row = by_fname.get(fname)
        given = list(labels[fname])
        if row is None:
            continue
        if given and all(row[column[name]] >= agree for name in given):
            kept[fname] = given
        elif row.max() >= agree:
            assigned[fname] = [name for name, s in zip(classes, row, strict=True) if s >= agree]
    counts = Relabelling(kept=len(kept), relabelled=len(assigned),
                         dropped=len(labels) - len(kept) - len(assigned), agree=agree)
    return dict(sorted({**kept, **assigned}.items())), counts


def write_labels_csv(uri: str, labels: Mapping[str, Sequence[str]]) -> None:
    """A fname,labels CSV as FAT2019's (several labels comma-joined, in quotes)."""
    table = pd.DataFrame({"fname": list(labels),
                          "labels": [join_labels(names) for names in labels.values()]})
    storage.write_bytes(uri, table.to_csv(index=False).encode())


def relabel_noisy(cfg: TrainConfig, scores_run: str, agree: float) -> Relabelling:
    """Relabel the store's noisy clips with the teacher's scores: <out>/noisy_labels.csv, then
    <out>/relabel.json."""
    scores = storage.read_parquet(storage.join(scores_run, predictions.SCORES)).to_pandas()
    noisy = FeatureStore.open(cfg.features, cfg.mel).table("train_noisy",
                                                          columns=["fname", "labels"])
    labels = dict(zip(noisy.column("fname").to_pylist(), noisy.column("labels").to_pylist(),
                      strict=True))
    classes = [c for c in scores.columns if c != "fname"]
    chosen, counts = relabel(scores, labels, classes, agree)
    write_labels_csv(storage.join(cfg.out, NOISY_LABELS), chosen)
    storage.write_json(storage.join(cfg.out, RELABEL), asdict(counts))
    return counts


def recorded(out: str, agree: float) -> Relabelling | None:
    """The relabelling an earlier run completed at this threshold, or None."""
    uri = storage.join(out, RELABEL)
    if not storage.is_file(uri) or not storage.is_file(storage.join(out, NOISY_LABELS)):
        return None
    counts = Relabelling(**storage.read_json(uri))
    return counts if counts.agree == agree else None
