"""Stratified folds: every class spread evenly, every clip in exactly one fold, seed-stable."""

import numpy as np
import pytest

from fatlib.core.folds import stratified_folds


def _targets(seed=0, n=300, c=12):
    rng = np.random.default_rng(seed)
    t = rng.random((n, c)) < rng.uniform(0.03, 0.25, size=c)
    t[np.arange(n), rng.integers(0, c, n)] = True  # every clip has a label
    return t.astype(int)


@pytest.mark.parametrize("k", [3, 5])
def test_every_class_is_spread_evenly(k):
    t = _targets()
    folds = stratified_folds(t, k, seed=1)
    assert folds.shape == (len(t),) and set(folds) == set(range(k))
    sizes = np.bincount(folds, minlength=k)
    assert np.abs(sizes - len(t) / k).max() <= 0.05 * len(t) / k + 1  # multi-label: near equal
    for c in range(t.shape[1]):
        per_fold = np.bincount(folds[t[:, c] > 0], minlength=k)
        assert per_fold.max() - per_fold.min() <= 2, (c, per_fold)


def test_better_than_a_random_split():
    t = _targets(3)
    folds = stratified_folds(t, 5, seed=0)
    random = np.random.default_rng(0).integers(0, 5, len(t))

    def spread(f):
        return sum(np.ptp(np.bincount(f[t[:, c] > 0], minlength=5)) for c in range(t.shape[1]))

    assert spread(folds) < spread(random) / 2


def test_same_seed_same_folds_other_seed_other_folds():
    t = _targets()
    a, b = stratified_folds(t, 5, seed=7), stratified_folds(t, 5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert (a != stratified_folds(t, 5, seed=8)).any()


def test_too_few_clips_is_an_error():
    with pytest.raises(ValueError, match="cannot fill 5 folds"):
        stratified_folds(np.eye(3), 5)
