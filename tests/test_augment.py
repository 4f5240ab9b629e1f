"""Batch preparation: the seed's colour mapping, crops and padding, TTA windows, mixup, masks."""

import numpy as np
import pytest
import torch

from fatlib.augment import (
    Normalisation,
    crop_batch,
    mixup,
    random_starts,
    seed_color,
    spec_augment,
    tta_starts,
)


def _seed_mono_to_color(x, eps=1e-6):
    """The seed kernel's mono_to_color, verbatim in logic (3 stacked channels, uint8)."""
    x = np.stack([x, x, x], axis=-1)
    mean, std = x.mean(), x.std()
    xstd = (x - mean) / (std + eps)
    _min, _max = xstd.min(), xstd.max()
    if (_max - _min) > eps:
        v = np.clip(xstd, _min, _max)
        v = 255 * (v - _min) / (_max - _min)
        return v.astype(np.uint8)
    return np.zeros_like(xstd, dtype=np.uint8)


def test_seed_color_equals_the_seed_kernel():
    logmel = np.random.default_rng(0).normal(-40, 15, size=(128, 300)).astype(np.float32)
    expected = _seed_mono_to_color(logmel)[..., 0]
    ours = seed_color(logmel)
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1  # float rounding at .5
    assert (ours == expected).mean() > 0.999
    assert not seed_color(np.full((4, 4), -80.0)).any()


def test_normalisations():
    x = np.array([[-80.0, -40.0], [0.0, 40.0]], dtype=np.float32)
    g = Normalisation("global", mean=-20.0, std=40.0)
    np.testing.assert_allclose(g.clip(x), [[-1.5, -0.5], [0.5, 1.5]])
    assert g.channels == 1 and Normalisation("color").channels == 3
    c = Normalisation("clip").clip(x)
    assert c.mean() == pytest.approx(0, abs=1e-6) and c.std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(Normalisation("clip").clip(x + 30), c, atol=1e-5)  # level-free
    assert Normalisation("color").clip(x).max() == 1.0


def test_random_starts_stay_inside_long_clips_and_place_short_ones():
    rng = np.random.default_rng(0)
    frames = np.array([500, 128, 40] * 200)
    starts = random_starts(frames, 128, rng)
    long, exact, short = starts[0::3], starts[1::3], starts[2::3]
    assert long.min() >= 0 and long.max() <= 372 and len(set(long)) > 50
    assert (exact == 0).all()
    assert short.min() >= -88 and short.max() <= 0


def test_crop_batch_cuts_and_pads_with_the_silence_floor():
    long = np.arange(20, dtype=np.float32).reshape(2, 10)
    short = np.full((2, 3), 5.0, dtype=np.float32)
    short[:, 1] = -80.0
    out = crop_batch([long, short], [4, -2], 6)
    np.testing.assert_array_equal(out[0], long[:, 4:10])
    np.testing.assert_array_equal(out[1, 0], [-80, -80, 5, -80, 5, -80])


def test_tta_windows_cover_the_clip():
    np.testing.assert_array_equal(tta_starts(300, 128, 1), [86])
    starts = tta_starts(1000, 128, 8)
    assert starts[0] == 0 and starts[-1] == 872 and np.all(np.diff(starts) > 0)
    shifted = tta_starts(60, 128, 3)
    assert list(shifted) == [0, -34, -68]


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


@pytest.mark.parametrize("mode", ["nope"])
def test_unknown_normalisation(mode):
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normalisation(mode).clip(np.zeros((2, 2)))
