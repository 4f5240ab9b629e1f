"""lwlrap: equal to sklearn's weighted LRAP and to the official per-sample algorithm."""

import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score

from fatlib.core.metrics import labels_on_top, lwlrap, per_class_lwlrap


def _official_per_class_lwlrap(truth, scores):
    """The competition's reference code (per-sample loop), transcribed for numpy 2."""
    n_samples, n_classes = scores.shape
    precisions = np.zeros((n_samples, n_classes))
    for i in range(n_samples):
        positives = np.flatnonzero(truth[i] > 0)
        if not len(positives):
            continue
        retrieved = np.argsort(scores[i])[::-1]
        ranking = np.zeros(n_classes, dtype=int)
        ranking[retrieved] = range(n_classes)
        hit = np.zeros(n_classes, dtype=bool)
        hit[ranking[positives]] = True
        cumulative_hits = np.cumsum(hit)
        precisions[i, positives] = cumulative_hits[ranking[positives]] / (
            1 + ranking[positives].astype(float)
        )
    labels_per_class = np.sum(truth > 0, axis=0)
    weights = labels_per_class / float(np.sum(labels_per_class))
    return precisions.sum(axis=0) / np.maximum(1, labels_per_class), weights


def _random_problem(seed, n=300, c=20, empty_rows=True):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, c)) < rng.uniform(0.03, 0.2)).astype(int)
    if not empty_rows:
        truth[np.arange(n), rng.integers(0, c, n)] = 1
    scores = rng.random((n, c)) + 0.5 * truth * rng.random((n, c))
    return truth, scores


@pytest.mark.parametrize("seed", range(5))
def test_equals_official_algorithm(seed):
    truth, scores = _random_problem(seed)
    per_class, weights = per_class_lwlrap(truth, scores)
    ref_per_class, ref_weights = _official_per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(per_class, ref_per_class, rtol=1e-12)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-12)
    assert lwlrap(truth, scores) == pytest.approx(float(np.sum(ref_per_class * ref_weights)))


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn_weighted_lrap_including_ties(seed):
    truth, scores = _random_problem(seed, empty_rows=False)
    scores = np.round(scores, 1)  # plenty of ties
    expected = label_ranking_average_precision_score(truth, scores, sample_weight=truth.sum(1))
    assert lwlrap(truth, scores) == pytest.approx(expected, rel=1e-12)


def test_rows_without_labels_are_excluded():
    truth, scores = _random_problem(7, empty_rows=False)
    extra_truth = np.zeros((50, truth.shape[1]), dtype=int)
    extra_scores = np.random.default_rng(1).random((50, truth.shape[1]))
    both = lwlrap(np.vstack([truth, extra_truth]), np.vstack([scores, extra_scores]))
    assert both == pytest.approx(lwlrap(truth, scores))


def test_known_values():
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    assert lwlrap(truth, np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.9]])) == 1.0
    # Row 2: "c" ranked 1st (precision 1), "b" ranked 3rd with 2 hits (2/3) -> (1 + 1 + 2/3) / 3
    assert lwlrap(truth, np.array([[0.9, 0.1, 0.0], [0.5, 0.1, 0.9]])) == pytest.approx(8 / 9)
    # Ties rank a true label after every tied label: all scores equal -> 1/3 for row 1.
    assert lwlrap(np.array([[1, 0, 0]]), np.zeros((1, 3))) == pytest.approx(1 / 3)


def test_per_class_weights_sum_to_one_and_recombine():
    truth, scores = _random_problem(3)
    per_class, weights = per_class_lwlrap(truth, scores)
    assert weights.sum() == pytest.approx(1.0)
    assert float(per_class @ weights) == pytest.approx(lwlrap(truth, scores))


def test_clear_errors():
    with pytest.raises(ValueError, match="differ"):
        lwlrap(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="no positive label"):
        lwlrap(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        lwlrap(np.ones((1, 2)), np.array([[np.nan, 1.0]]))


def test_labels_on_top_means_a_clip_of_k_labels_has_them_as_its_top_k():
    truth = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    scores = np.array([[0.9, 0.2, 0.1],
                       [0.7, 0.6, 0.5],  # both labels above the third class
                       [0.9, 0.1, 0.5],  # one label below a wrong class
                       [0.5, 0.5, 0.1],  # tied with a wrong class: counted against, as lwlrap
                       [0.5, 0.4, 0.1],  # no label: never on top
                       [0.1, 0.2, 0.3]])  # every class true
    assert labels_on_top(truth, scores).tolist() == [True, True, False, False, False, True]
    # Where every clip is on top, every label is ranked within its clip's labels: lwlrap 1.
    rng = np.random.default_rng(0)
    truth = (rng.random((50, 6)) < 0.3).astype(int)
    truth[truth.sum(axis=1) == 0, 0] = 1
    assert labels_on_top(truth, truth + rng.random((50, 6)) * 0.5).all()
    assert lwlrap(truth, truth + rng.random((50, 6)) * 0.5) == 1.0
