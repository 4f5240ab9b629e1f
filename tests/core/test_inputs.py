"""Network inputs: crops and padding, TTA windows, and the training batch assembled from
stored rows."""

import numpy as np
import pytest
import torch

from fatlib.core.augment import Compose, compose
from fatlib.core.features import CLIP_STATS, clip_stats, encode_logmel, time_delta
from fatlib.core.frontend import Normalisation
from fatlib.core.inputs import (
    InputSpec,
    audible,
    batch_stats,
    crop_rows,
    host_batch,
    random_starts,
    resize_time,
    resized_spans,
    soft_targets,
    to_device,
    training_batch,
    tta_starts,
)


def test_random_starts_stay_inside_long_clips_and_place_short_ones():
    rng = np.random.default_rng(0)
    frames = np.array([500, 128, 40] * 200)
    starts = random_starts(frames, 128, rng)
    long, exact, short = starts[0::3], starts[1::3], starts[2::3]
    assert long.min() >= 0 and long.max() <= 372 and len(set(long)) > 50
    assert (exact == 0).all()
    assert short.min() >= -88 and short.max() <= 0


def test_crop_rows_cuts_from_the_bytes_and_pads_with_the_silence_floor():
    long = np.arange(20, dtype=np.float16).reshape(2, 10)
    short = np.full((2, 3), 5.0, dtype=np.float16)
    short[:, 1] = -80.0
    out = crop_rows([encode_logmel(long), encode_logmel(short)], [10, 3], [4, -2], 2, 6,
                    [0.0, -80.0])
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out[0], long[:, 4:10])
    np.testing.assert_array_equal(out[1, 0], [-80, -80, 5, -80, 5, -80])


def test_batch_stats_are_the_rows_stats_columns_in_clip_stats_order():
    rows = _rows([40, 16, 5], ["a", "b", "c"])
    stats = batch_stats(rows, 8)
    assert stats.shape == (3, len(CLIP_STATS)) and stats.dtype == np.float32
    np.testing.assert_array_equal(stats[0], clip_stats(
        np.frombuffer(rows["logmel"][0], dtype="<f2").reshape(8, 40)))


def test_tta_windows_cover_the_clip():
    np.testing.assert_array_equal(tta_starts(300, 128, 1), [86])
    starts = tta_starts(1000, 128, 8)
    assert starts[0] == 0 and starts[-1] == 872 and np.all(np.diff(starts) > 0)
    shifted = tta_starts(60, 128, 3)
    assert list(shifted) == [0, -34, -68]


def _rows(frames, classes):
    rng = np.random.default_rng(1)
    logmels = [rng.normal(-40, 10, size=(8, n)).astype(np.float32) for n in frames]
    return {"logmel": np.array([encode_logmel(m) for m in logmels], dtype=object),
            "n_frames": np.array(frames),
            "labels": np.array([[classes[i % len(classes)]] for i in range(len(frames))],
                               dtype=object),
            "weight": np.array([1.0, 0.5, 1.0], dtype=np.float32),
            **_stats(logmels)}


def _stats(logmels):
    """The store's whole-clip stats columns of these log-mels."""
    stats = np.stack([clip_stats(np.asarray(m, dtype=np.float16)) for m in logmels])
    return {name: stats[:, i] for i, name in enumerate(CLIP_STATS)}


def test_training_batch_crops_scales_and_targets():
    classes = ["a", "b", "c"]
    spec = InputSpec(n_mels=8, crop_frames=16, norm=Normalisation("color"))
    x, y, w = training_batch(_rows([40, 16, 5], classes), spec, classes,
                             np.random.default_rng(0))
    assert x.shape == (3, 3, 8, 16) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])  # colour mode: three identical channels
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    np.testing.assert_array_equal(y.numpy(), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(w.numpy(), [1.0, 0.5, 1.0])


def test_training_batch_is_reproducible_and_applies_the_named_augmentations():
    classes = ["a", "b", "c"]
    plain = InputSpec(8, 16, Normalisation("clip"))
    mixed = InputSpec(8, 16, Normalisation("clip"), compose([("mixup", {"alpha": 0.4})]))
    rows = _rows([40, 30, 20], classes)
    a = training_batch(rows, mixed, classes, np.random.default_rng(3))
    b = training_batch(rows, mixed, classes, np.random.default_rng(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    _, y_plain, _ = training_batch(rows, plain, classes, np.random.default_rng(3))
    assert torch.equal(y_plain, torch.eye(3)) and not torch.equal(a[1], y_plain)
    assert plain.augment == Compose()


def test_host_half_is_pinnable_and_device_half_keeps_shapes_and_weights():
    classes = ["a", "b", "c"]
    spec = InputSpec(8, 16, Normalisation("color"), compose([("mixup", {"alpha": 0.4}),
                                                              ("specaugment", {"max_time": 4})]))
    host = host_batch(_rows([40, 30, 20], classes), spec, classes, np.random.default_rng(0))
    assert host.crops.dtype == torch.float16 and host.crops.shape == (3, 8, 16)
    first = to_device(host, spec, np.random.default_rng(5), torch.device("cpu"))
    again = to_device(host, spec, np.random.default_rng(5), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded
    x, y, w = first
    assert x.shape == (3, 3, 8, 16) and y.shape == (3, 3)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(3))  # blended targets stay one label
    assert w.shape == (3,) and float(w.min()) >= 0.5 and float(w.max()) <= 1.0


def test_wrap_padding_repeats_a_short_clip_instead_of_silence():
    clip = np.arange(12, dtype=np.float16).reshape(2, 6)
    data = [encode_logmel(clip)]
    silent = crop_rows(data, [6], [-3], 2, 16, [-80.0])
    wrapped = crop_rows(data, [6], [-3], 2, 16, [-80.0], wrap=np.array([True]))
    assert (silent[0, :, :3] == -80).all()
    np.testing.assert_array_equal(wrapped[0, 0], [3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(wrapped[0, :, 3:9], clip)  # the clip where silence would put it
    # A clip padded to the crop's length by preprocessing (silence around a short sound): the
    # sound alone is repeated, from a random point of it, the padding never.
    padded = np.full((2, 16), -80.0, dtype=np.float16)
    padded[:, 6:10] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    data = [encode_logmel(padded)] * 2
    assert audible(padded, -80.0) == (6, 10) and audible(np.full((2, 4), -80.0), -80.0) == (0, 0)
    out = crop_rows(data, [16, 16], [0, 0], 2, 16, [-80.0] * 2, wrap=np.array([True, False]),
                    phases=np.array([5, 5]))
    np.testing.assert_array_equal(out[0, 0], [2, 3, 4, 1] * 4)  # phase 5 = 1 mod 4
    np.testing.assert_array_equal(out[1], padded)  # not wrapped: the stored clip as it is
    spec = InputSpec(2, 16, Normalisation("global", -40.0, 10.0), pad="wrap")
    rows = {"logmel": data * 4, "n_frames": [16] * 8, "labels": [["a"]] * 8, "weight": [1.0] * 8,
            **_stats([padded] * 8)}
    crops = host_batch(rows, spec, ["a"], np.random.default_rng(0)).crops.numpy()
    assert (crops > -80).all() and len({tuple(c[0, :4]) for c in crops}) > 1  # phases vary
    classes = ["a", "b", "c"]
    spec = InputSpec(8, 64, Normalisation("clip"), pad="random")
    host = host_batch(_rows([40, 16, 5], classes), spec, classes, np.random.default_rng(0))
    assert host.crops.shape == (3, 8, 64)


def test_resize_time_equals_torch_linear_interpolation():
    window = np.random.default_rng(3).normal(size=(4, 37)).astype(np.float16)
    for frames in (16, 37, 50):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(window.astype(np.float32))[None], size=frames, mode="linear",
            align_corners=False)[0].numpy()
        np.testing.assert_allclose(resize_time(window, frames), expected, atol=1e-5)


def test_resized_crops_stretch_a_window_of_random_length_to_the_crop():
    ramp = np.tile(np.arange(100, dtype=np.float16), (2, 1))  # dB = frame index
    rng = np.random.default_rng(0)
    spans = resized_spans(64, 20, 0.25, rng)
    assert spans.min() >= 15 and spans.max() <= 25 and len(set(spans.tolist())) > 3
    crops = crop_rows([encode_logmel(ramp)] * 64, [100] * 64, [10] * 64, 2, 20, [0.0] * 64,
                      spans=spans)
    assert crops.shape == (64, 2, 20)
    # A ramp stays a ramp: it starts near the window's first frame and runs at slope span/crop.
    slopes = np.diff(crops[:, 0, 2:-2].astype(np.float32), axis=1).mean(axis=1)
    np.testing.assert_allclose(slopes, spans / 20, rtol=0.02)
    assert np.abs(crops[:, 0, 0] - 10).max() <= 1
    assert resized_spans(64, 20, 0.0, rng) is None  # off: plain crops, no draw
    # A window longer than the clip, placed at offset 0, pads (it once sliced short and failed).
    short = crop_rows([encode_logmel(ramp[:, :20])], [20], [0], 2, 20, [-80.0],
                      spans=np.array([25]))
    assert short.shape == (1, 2, 20) and short[0, 0, -1] == -80
    classes = ["a", "b", "c"]
    spec = InputSpec(8, 16, Normalisation("clip"), resized_crop=0.3)
    x, _, _ = training_batch(_rows([40, 16, 5], classes), spec, classes, np.random.default_rng(0))
    again, _, _ = training_batch(_rows([40, 16, 5], classes), spec, classes,
                                 np.random.default_rng(0))
    assert x.shape == (3, 1, 8, 16) and torch.equal(x, again)  # seeded


def test_time_delta_equals_librosa_delta():
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(2).normal(size=(2, 16, 40)).astype(np.float32)
    for order in (1, 2):
        ours = time_delta(torch.from_numpy(x), order).numpy()
        np.testing.assert_allclose(ours, librosa.feature.delta(x, order=order), atol=1e-4)


def test_delta_channels_are_the_crop_and_its_derivatives():
    classes = ["a", "b", "c"]
    spec = InputSpec(8, 16, Normalisation("clip", deltas=True))
    x, _, _ = training_batch(_rows([40, 16, 5], classes), spec, classes, np.random.default_rng(0))
    assert x.shape == (3, 3, 8, 16) and spec.norm.channels == 3
    torch.testing.assert_close(x[:, 1], time_delta(x[:, 0], 1))
    torch.testing.assert_close(x[:, 2], time_delta(x[:, 0], 2))


def test_soft_targets_touch_only_noisy_rows_and_stay_in_0_1():
    targets = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    soft = soft_targets(targets.copy(), np.array([False, True, True]), 0.2)
    np.testing.assert_allclose(soft, [[1.0, 0.0], [0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    assert soft.min() >= 0 and soft.max() <= 1
    np.testing.assert_array_equal(soft_targets(targets.copy(), None, 0.2), targets)
