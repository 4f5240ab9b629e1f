"""Augmentations (mixup, SpecAugment, frequency shifts): transforms with a probability, by name."""

import numpy as np
import pytest
import torch

from fatlib.core.augment import (
    FrequencyShift,
    Mixup,
    SpecAugment,
    compose,
    frequency_shift,
    mixup,
    spec_augment,
)


def test_mixup_is_a_convex_blend_dominated_by_the_original():
    rng = np.random.default_rng(0)
    x = torch.randn(8, 1, 4, 4)
    y = torch.eye(8)
    w = torch.ones(8)
    mx, my, mw = mixup(x, y, w, 0.4, rng)
    assert torch.allclose(my.sum(1), torch.ones(8))
    assert (torch.diagonal(my) >= 0.5).all()
    assert torch.allclose(mw, torch.ones(8))


def test_spec_augment_masks_whole_bands_and_spans():
    rng = np.random.default_rng(3)
    x = spec_augment(torch.ones(16, 1, 32, 40), rng, max_freq=6, max_time=6)
    zero_rows = (x == 0).all(dim=3)  # a masked mel band is zero at every frame
    zero_cols = (x == 0).all(dim=2)
    assert zero_rows.any() and zero_cols.any()
    assert zero_rows.sum(dim=(1, 2)).max() <= 12 and zero_cols.sum(dim=(1, 2)).max() <= 12
    assert (x == 1).float().mean() > 0.5


def test_frequency_shift_moves_each_sample_whole_along_the_mel_axis():
    n_mels, frames = 32, 5
    # Each mel bin holds its own index, so a shifted sample reads back its shift.
    x = torch.arange(n_mels, dtype=torch.float32).view(1, 1, n_mels, 1).expand(64, 3, n_mels,
                                                                              frames)
    y, w = torch.eye(64), torch.ones(64)
    shifted, sy, sw = FrequencyShift(max_bins=3)(x, y, w, np.random.default_rng(0))
    assert shifted.shape == x.shape and torch.equal(sy, y) and torch.equal(sw, w)
    shifts = n_mels // 2 - shifted[:, 0, n_mels // 2, 0]  # bin b takes bin b - s
    assert set(shifts.long().tolist()) == {3, 2, 1, 0, -1, -2, -3}
    for sample, s in zip(shifted, shifts.long().tolist(), strict=True):
        expected = (torch.arange(n_mels) - s).clamp(0, n_mels - 1).float()  # edges repeat
        assert torch.equal(sample, expected.view(1, n_mels, 1).expand(3, n_mels, frames))
    again = frequency_shift(x, np.random.default_rng(0), 3)
    assert torch.equal(again, shifted)  # seeded: the same generator, the same shifts


def test_transforms_fire_with_their_probability():
    x, y, w = torch.ones(4, 1, 8, 8), torch.eye(4), torch.ones(4)
    never = SpecAugment(max_freq=8, max_time=8, p=0.0)
    assert torch.equal(never(x.clone(), y, w, np.random.default_rng(0))[0], x)
    masked = [bool((SpecAugment(max_freq=8, max_time=8, p=0.5)(
        x.clone(), y, w, np.random.default_rng(s))[0] == 0).any()) for s in range(200)]
    assert 0.35 < np.mean(masked) < 0.65  # fired on about half the batches


def test_compose_builds_transforms_by_name_and_refuses_unknown_ones():
    pipeline = compose([("mixup", {"alpha": 0.2}), ("specaugment", {"max_time": 4}),
                        ("frequency_shift", {"max_bins": 2})])
    assert pipeline.transforms == (Mixup(alpha=0.2), SpecAugment(max_time=4),
                                   FrequencyShift(max_bins=2))
    x, y, w = torch.ones(4, 1, 16, 16), torch.eye(4), torch.ones(4)
    assert pipeline(x, y, w, np.random.default_rng(0))[0].shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'"):
        compose([("cutout", {})])


def test_mixup_transform_equals_the_function_with_the_same_generator():
    x, y, w = torch.randn(6, 1, 4, 4), torch.eye(6), torch.ones(6)
    ours = Mixup(alpha=0.4)(x, y, w, np.random.default_rng(5))
    plain = mixup(x, y, w, 0.4, np.random.default_rng(5))
    assert all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))
