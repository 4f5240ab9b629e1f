"""Labels: Kaggle's label fields, the vocabulary rule, multi-hot targets and their errors."""

import numpy as np
import pytest

from fatlib.core.labels import LabelError, join_labels, multi_hot, parse_labels, vocabulary


def test_parse_and_join_kaggle_fields():
    assert parse_labels("Bark,Meow") == ["Bark", "Meow"]
    assert parse_labels(" Bark , Meow ") == ["Bark", "Meow"]
    assert parse_labels("") == [] and parse_labels(float("nan")) == [] and parse_labels(None) == []
    assert join_labels(["Bark", "Meow"]) == "Bark,Meow"


def test_vocabulary_prefers_submission_columns_in_their_order():
    assert vocabulary(["fname", "Zebra", "Ant"], [["Cat"]]) == ["Zebra", "Ant"]
    assert vocabulary(None, [["Meow"], ["Bark", "Meow"]]) == ["Bark", "Meow"]


def test_vocabulary_errors():
    with pytest.raises(LabelError, match="empty"):
        vocabulary(["fname"])
    with pytest.raises(LabelError, match="duplicate"):
        vocabulary(["fname", "A", "A"])


def test_multi_hot_and_unknown_label_names_the_clip():
    targets = multi_hot([["B"], ["A", "C"], []], ["A", "B", "C"])
    np.testing.assert_array_equal(targets, [[0, 1, 0], [1, 0, 1], [0, 0, 0]])
    assert targets.dtype == np.float32
    with pytest.raises(LabelError, match="x.wav: label 'D' is not in the class vocabulary"):
        multi_hot([["A"], ["D"]], ["A", "B"], names=["y.wav", "x.wav"])
