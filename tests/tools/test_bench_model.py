"""The TTA benchmark's figures: lwlrap over single- and multi-label clips apart, and its table."""

import numpy as np
import pytest

from fatlib.core.config import TTA_COMBINATIONS
from fatlib.tools.bench_model import WHOLE_CLIP, TtaBench, label_split_lwlrap

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
