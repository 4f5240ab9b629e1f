"""The TTA benchmark's figures: lwlrap over single- and multi-label clips apart, the clips whose
labels are ranked on top, and its table."""

import numpy as np
import pytest

from fatlib.core.config import TTA_COMBINATIONS
from fatlib.tools.bench_tta import WHOLE_CLIP, TtaBench, label_split_lwlrap, rank_summary

TRUTH = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]])
SCORES = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3],  # singles: each label ranked first
                   [0.9, 0.1, 0.5],  # label 1 ranked 3rd behind a wrong one: precision 2/3
                   [0.2, 0.8, 0.7]])  # both labels on top


def test_lwlrap_over_single_and_multi_label_clips_apart():
    every, singles, multi = label_split_lwlrap(TRUTH, SCORES)
    assert singles == 1.0
    assert multi == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)  # the multi-label rows' 4 labels
    assert every == pytest.approx((2 + 1 + 2 / 3 + 1 + 1) / 6)  # all 6 labels weigh alike
    # Truth with one kind of clip only: the one figure, no halves.
    assert label_split_lwlrap(TRUTH[:2], SCORES[:2]) == (1.0,)
    assert label_split_lwlrap(TRUTH[2:], SCORES[2:]) == (pytest.approx(11 / 12),)


def test_tta_table_shows_whole_clips_and_the_halves_only_when_both_kinds_exist():
    def table(cell):
        return {(n, how): cell for n in (1, 4, WHOLE_CLIP) for how in TTA_COMBINATIONS}

    split = TtaBench(n_clips=4, n_models=1, lwlrap=table((0.9444, 1.0, 0.9167)),
                     standardised=table((0.5, 0.25, 0.75)), n_multi_label=2).format()
    lines = split.splitlines()
    assert lines[0].endswith("; 2 single-label clips (singles), 2 multi-label (multi)")
    assert lines[3].split() == ["all", "singles", "multi"] * len(TTA_COMBINATIONS)
    assert lines[6].split() == ["whole", "clip", *["0.9444", "1.0000", "0.9167"] * 3]
    assert lines[-1].split() == ["whole", "clip", *["0.5000", "0.2500", "0.7500"] * 3]
    plain = TtaBench(n_clips=2, n_models=1, lwlrap=table((0.8,)), standardised=table((0.7,)))
    lines = plain.format().splitlines()
    assert lines[0] == "2 clips, 1 model(s); lwlrap by TTA crops (rows) and combination (columns)"
    assert lines[1:4] == ["as scored", f"{'crops':>10}  " + "  ".join(
        f"{c:>12}" for c in TTA_COMBINATIONS), f"{1:>10}  " + "  ".join([f"{0.8:>12.4f}"] * 3)]
    assert lines[5].split() == ["whole", "clip", "0.8000", "0.8000", "0.8000"]


def test_rank_summary_counts_clips_with_every_label_on_top_and_single_misses_per_class():
    on_top, misses = rank_summary(TRUTH, SCORES, ["a", "b", "c"])
    assert on_top == (0.75, 1.0, 0.5)  # the third clip's label 1 is below a wrong class
    assert misses == {"a": 0.0, "b": 0.0}  # no single-label clip of "c"
    wrong = SCORES.copy()
    wrong[1] = [0.9, 0.8, 0.3]  # the "b" clip ranks "a" first
    assert rank_summary(TRUTH, wrong, ["a", "b", "c"]) == ((0.5, 0.5, 0.5), {"a": 0.0, "b": 1.0})
    assert rank_summary(TRUTH[:2], SCORES[:2], ["a", "b", "c"])[0] == (1.0,)


def test_tta_table_ends_with_the_on_top_shares_and_the_classes_missed_most():
    table = {(n, how): (0.9, 0.95, 0.85) for n in (1, 4) for how in TTA_COMBINATIONS}
    bench = TtaBench(n_clips=625, n_models=2, lwlrap=table, standardised=table,
                     n_multi_label=375, on_top=(0.62, 0.96, 0.44),
                     single_misses={"Eight": 0.07, "Five": 0.0, "Seven": 0.16})
    assert bench.format().splitlines()[-2:] == [
        f"every label of a clip ranked above every other class (1 crop(s), "
        f"{TTA_COMBINATIONS[0]}, as scored): all 0.62, singles 0.96, multi 0.44",
        "single-label clips not ranked first, by class: Seven 16%, Eight 7%"]
    perfect = TtaBench(n_clips=4, n_models=1, lwlrap=table, standardised=table,
                       n_multi_label=2, on_top=(1.0, 1.0, 1.0), single_misses={"a": 0.0})
    assert perfect.format().splitlines()[-1] == (
        "single-label clips not ranked first, by class: none")
