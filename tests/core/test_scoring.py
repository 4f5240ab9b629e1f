"""TTA scoring: crop windows (or whole clips) through the network, combined per clip."""

import numpy as np
import pytest
import torch

from fatlib.core.features import clip_stats, encode_logmel
from fatlib.core.frontend import Frontend, Normalisation, Tagger
from fatlib.core.models import build_model
from fatlib.core.scoring import combine, standardise_classes, tta_logits, whole_clip_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 5).eval()


def _tagger(network, norm):
    """The network behind the frontend of norm, as an artifact loads it."""
    return Tagger(Frontend(norm), network).eval()


def _stored(clips):
    """Clips as stored rows: float16 bytes, frame counts, whole-clip stats."""
    return ([encode_logmel(c) for c in clips], [c.shape[1] for c in clips],
            np.stack([clip_stats(c) for c in clips]))


def test_tta_logits_shape_and_single_centred_crop(model):
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(128, n)).astype(np.float16) for n in (300, 128, 90)]
    tagger, cpu = _tagger(model, Normalisation("global")), torch.device("cpu")
    logits = tta_logits(tagger, *_stored(clips), 128, 64, 3, cpu)
    assert logits.shape == (3, 3, 5)
    one = tta_logits(tagger, *_stored(clips[:1]), 128, 64, 1, cpu)
    with torch.no_grad():
        centred = model(torch.from_numpy(clips[0][None, None, :, 118:182].astype(np.float32)))
    torch.testing.assert_close(one[0, 0], centred[0], rtol=1e-4, atol=1e-4)


def test_colour_models_get_three_identical_channels_of_the_seed_mapping(model):
    net = build_model("resnet18", 5, in_channels=3).eval()
    clip = np.random.default_rng(1).normal(-40, 10, size=(128, 200)).astype(np.float16)
    norm = Normalisation("color")
    logits = tta_logits(_tagger(net, norm), *_stored([clip]), 128, 128, 1, torch.device("cpu"))
    assert logits.shape == (1, 1, 5)
    window = norm.clip(clip)[:, 36:164]  # the centred crop of the whole-clip mapping
    with torch.no_grad():
        expected = net(torch.from_numpy(window)[None, None].expand(1, 3, -1, -1))
    torch.testing.assert_close(logits[0, 0], expected[0], rtol=1e-3, atol=1e-3)


def test_whole_clip_logits_are_each_whole_normalised_clip_through_the_model(model):
    rng = np.random.default_rng(2)
    # Mixed lengths, interleaved, two of each: batched by length, returned in input order.
    lengths = (150, 70, 100, 150, 64, 100, 70)
    clips = [rng.normal(-40, 10, size=(32, n)).astype(np.float16) for n in lengths]
    norm = Normalisation("clip")
    logits = whole_clip_logits(_tagger(model, norm), *_stored(clips), 32, 64,
                               torch.device("cpu"))
    assert logits.shape == (len(clips), 1, 5)
    for i, clip in enumerate(clips):  # one at a time, never cropped
        with torch.no_grad():
            expected = model(torch.from_numpy(norm.clip(clip))[None, None])
        torch.testing.assert_close(logits[i, 0], expected[0], rtol=1e-4, atol=1e-4)
    assert combine(logits).shape == (len(clips), 5)  # the layout of TTA with one crop


def test_whole_clip_pads_a_short_clip_to_the_crop_centred_with_its_floor(model):
    rng = np.random.default_rng(3)
    clips = [rng.normal(-40, 10, size=(32, n)).astype(np.float16) for n in (40, 100, 41)]
    norm, cpu = Normalisation("clip"), torch.device("cpu")
    logits = whole_clip_logits(_tagger(model, norm), *_stored(clips), 32, 64, cpu)
    assert logits.shape == (3, 1, 5) and torch.isfinite(logits).all()
    x = norm.clip(clips[0])
    padded = np.pad(x, ((0, 0), (12, 12)), constant_values=x.min())  # 40 frames in 64
    with torch.no_grad():
        expected = model(torch.from_numpy(padded)[None, None])
    torch.testing.assert_close(logits[0, 0], expected[0], rtol=1e-4, atol=1e-4)
    # A short clip is exactly what one centred TTA crop of it is.
    short = [clips[0], clips[2]]
    torch.testing.assert_close(logits[[0, 2]],
                               tta_logits(_tagger(model, norm), *_stored(short), 32, 64, 1, cpu),
                               rtol=1e-4, atol=1e-4)

def test_combinations():
    logits = torch.tensor([[[0.0, 2.0], [2.0, -2.0]]])
    sig = torch.sigmoid(logits)
    np.testing.assert_allclose(combine(logits, "mean_sigmoid"), sig.mean(1).numpy())
    np.testing.assert_allclose(combine(logits, "max_sigmoid"), sig.amax(1).numpy())
    np.testing.assert_allclose(combine(logits, "mean_logit"), torch.sigmoid(logits.mean(1)))
    with pytest.raises(ValueError, match="unknown combination"):
        combine(logits, "median")


def test_standardised_classes_lose_a_bias_on_whole_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 40, 5))  # 2 models, 40 clips, 5 classes
    # A new domain lifts class 0 and squeezes class 3 for every clip, differently per model.
    shifted = logits.copy()
    shifted[:, :, 0] += [[3.0], [1.0]]
    shifted[:, :, 3] *= 0.2
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    plain, biased = standardise_classes(sigmoid(logits)), standardise_classes(sigmoid(shifted))
    np.testing.assert_allclose(plain, biased, atol=1e-5)
    assert plain.shape == (40, 5) and plain.dtype == np.float32
    assert 0 < plain.min() and plain.max() < 1
    # Each model's classes sit at logit mean 0, std 1; the models' z-scores are averaged.
    z = (logits - logits.mean(1, keepdims=True)) / logits.std(1, keepdims=True)
    np.testing.assert_allclose(plain, sigmoid(z.mean(0)), atol=1e-5)
    # Saturated probabilities stay finite; a class scored alike everywhere sits at 0.5.
    edge = np.stack([np.tile([[1.0, 0.0, 0.3]], (4, 1)), np.tile([[1.0, 0.0, 0.3]], (4, 1))])
    edge[:, 0, 2] = 0.9
    out = standardise_classes(edge)
    assert np.isfinite(out).all() and np.allclose(out[:, :2], 0.5)
