"""The TTA benchmark behind BENCHMARKS.md: a model's test lwlrap by TTA crops and combination,
over single- and multi-label clips apart, and how often every label of a clip is ranked on top;
jobs/benchmark.py tta prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fatlib.core.config import TTA_COMBINATIONS
from fatlib.core.metrics import labels_on_top, lwlrap

WHOLE_CLIP = "whole clip"  # TtaBench's row of clips scored whole (`jobs/infer.py --whole-clip`)


def label_split_lwlrap(truth: np.ndarray, scores: np.ndarray) -> tuple[float, ...]:
    """lwlrap of scores (n_clips, n_classes) against 0/1 truth: (all clips, the clips with one
    label, those with two or more), or (all clips,) when the truth lacks either kind."""
    single, multi = _label_kinds(truth)
    if not (single.any() and multi.any()):
        return (lwlrap(truth, scores),)
    return (lwlrap(truth, scores), lwlrap(truth[single], scores[single]),
            lwlrap(truth[multi], scores[multi]))


@dataclass
class TtaBench:
    """Test lwlrap per number of TTA crops (and whole clips) and per way of combining them, as
    scored and with each class standardised over the clips (`jobs/infer.py
    --standardise-classes`); over all clips and the single- and multi-label ones apart."""

    n_clips: int
    n_models: int
    # (n_crops or WHOLE_CLIP, combination) -> label_split_lwlrap: all[, singles, multi]
    lwlrap: dict[tuple[int | str, str], tuple[float, ...]]
    standardised: dict[tuple[int | str, str], tuple[float, ...]]  # with --standardise-classes
    n_multi_label: int = 0  # clips with two or more labels
    # The first crop count, mean of sigmoids, as scored: the share of clips whose labels are
    # their top scores (all[, singles, multi]), and per class the share of its single-label
    # clips where another class scores higher (the classes a new domain breaks).
    on_top: tuple[float, ...] = ()
    single_misses: dict[str, float] = field(default_factory=dict)

    def format(self) -> str:
        """Two tables: one row per crop count (and whole clips), one column per combination,
        split into all / singles / multi when the truth has both kinds of clip."""
        split = 0 < self.n_multi_label < self.n_clips
        lines = [f"{self.n_clips} clips, {self.n_models} model(s); lwlrap by TTA crops (rows) "
                 "and combination (columns)" + (
                     f"; {self.n_clips - self.n_multi_label} single-label clips (singles), "
                     f"{self.n_multi_label} multi-label (multi)" if split else "")]
        width, sub = (23, f"{'all':>7} {'singles':>7} {'multi':>7}") if split else (12, "")
        for title, table in (("as scored", self.lwlrap),
                             ("classes standardised over the clips", self.standardised)):
            lines += [title, f"{'crops':>10}  " + "  ".join(f"{c:>{width}}"
                                                             for c in TTA_COMBINATIONS)]
            lines += [" " * 12 + "  ".join([sub] * len(TTA_COMBINATIONS))] if split else []
            for row in dict.fromkeys(n for n, _ in table):
                cells = [table[(row, c)] for c in TTA_COMBINATIONS]
                lines.append(f"{row:>10}  " + "  ".join(
                    " ".join(f"{v:>7.4f}" for v in cell) if split else f"{cell[0]:>12.4f}"
                    for cell in cells))
        return "\n".join(lines + self._ranks())

    def _ranks(self) -> list[str]:
        """The on-top shares and the classes missed most alone, when they were measured."""
        if not self.on_top:
            return []
        row = next(iter(self.lwlrap))[0]
        names = ("all", "singles", "multi") if len(self.on_top) == 3 else ("all",)
        missed = sorted(((share, name) for name, share in self.single_misses.items() if share),
                        reverse=True)
        return [f"every label of a clip ranked above every other class ({row} crop(s), "
                f"{TTA_COMBINATIONS[0]}, as scored): " + ", ".join(
                    f"{name} {share:.2f}" for name, share in zip(names, self.on_top, strict=True)),
                "single-label clips not ranked first, by class: " + (", ".join(
                    f"{name} {share:.0%}" for share, name in missed) or "none")]


def bench_tta(
    model_uri: str, features: str, truth_csv: str | None = None, split: str = "test",
    crops: tuple[int, ...] = (1, 2, 4, 8), whole_clip: bool = False,
) -> TtaBench:
    """lwlrap of a model (or a run's fold ensemble, as inference averages it) on a feature
    split for each TTA crop count (and each clip whole) and combination, as scored and
    class-standardised."""
    from fatlib.core.inputs import batch_stats
    from fatlib.core.labels import multi_hot
    from fatlib.core.scoring import clip_logits, combine, ensemble
    from fatlib.io.artifact import load_model, model_artifacts
    from fatlib.io.dataset import read_truth
    from fatlib.io.feature_rows import feature_columns
    from fatlib.io.feature_store import FeatureStore

    models = [load_model(uri) for uri in model_artifacts(model_uri)]
    mel = models[0][0].mel
    columns = feature_columns(FeatureStore.open(features, mel).table(split))
    if truth_csv:
        labels = read_truth(truth_csv)
        if labels is None:
            raise FileNotFoundError(f"{truth_csv}: no such truth CSV")
    else:
        labels = dict(zip(columns["fname"], columns["labels"], strict=True))
    keep = np.array([bool(labels.get(f)) for f in columns["fname"]])
    rows = {name: values[keep] for name, values in columns.items()}
    truth = multi_hot([labels[f] for f in rows["fname"]], models[0][0].classes)
    stats = batch_stats(rows, mel.n_mels)
    results, standardised, ranked = {}, {}, None
    for n in [*sorted(crops), *([WHOLE_CLIP] if whole_clip else [])]:
        logits = [clip_logits(model, rows["logmel"], rows["n_frames"], stats, mel.n_mels,
                              meta.crop_frames, None if n == WHOLE_CLIP else n,
                              torch.device("cpu")) for meta, model in models]
        for how in TTA_COMBINATIONS:
            each = np.stack([combine(x, how) for x in logits])
            scores = ensemble(each)
            results[(n, how)] = label_split_lwlrap(truth, scores)
            standardised[(n, how)] = label_split_lwlrap(truth, ensemble(each, standardise=True))
            ranked = scores if ranked is None else ranked  # first crops, first way
    on_top, misses = rank_summary(truth, ranked, models[0][0].classes)
    return TtaBench(n_clips=len(rows["fname"]), n_models=len(models), lwlrap=results,
                    standardised=standardised, n_multi_label=int(_label_kinds(truth)[1].sum()),
                    on_top=on_top, single_misses=misses)


def rank_summary(truth: np.ndarray, scores: np.ndarray, classes: list[str],
                 ) -> tuple[tuple[float, ...], dict[str, float]]:
    """(share of clips with every label on top: all[, singles, multi]; per class, the share of
    its single-label clips not ranked first) of scores against 0/1 truth."""
    top = labels_on_top(truth, scores)
    single, multi = _label_kinds(truth)
    shares = (float(top.mean()),) + ((float(top[single].mean()), float(top[multi].mean()))
                                     if single.any() and multi.any() else ())
    misses = {name: float(1 - top[single & (truth[:, c] > 0)].mean())
              for c, name in enumerate(classes) if (single & (truth[:, c] > 0)).any()}
    return shares, misses


def _label_kinds(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the clips with one label and of those with two or more."""
    n_labels = (np.asarray(truth) > 0).sum(axis=1)
    return n_labels == 1, n_labels >= 2
