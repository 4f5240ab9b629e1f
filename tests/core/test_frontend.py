"""The frontend: the seed's colour mapping, the normalisations per crop as on whole clips, the
input channels, and the tagger (frontend + network) an artifact loads into."""

import numpy as np
import pytest
import torch

from fatlib.core.features import clip_stats, encode_logmel, time_delta
from fatlib.core.frontend import Frontend, Normalisation, Tagger, seed_color
from fatlib.core.inputs import crop_rows, random_starts


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


def _reference_crop(clip, start, crop):
    """The crop the stage cut before issue 13: of the whole normalised clip, padded with its
    minimum."""
    if start >= 0:
        return clip[:, start : start + crop]
    out = np.full((clip.shape[0], crop), clip.min(), dtype=np.float32)
    out[:, -start : -start + clip.shape[1]] = clip
    return out


def _stored_crops(seed=7, frames=(300, 128, 40, 200), n_mels=32, crop=64):
    """(logmels, starts, dB crops (B, n_mels, crop), stats (B, 4)) of random clips, the last
    one silent."""
    rng = np.random.default_rng(seed)
    logmels = [rng.normal(-45, 15, size=(n_mels, n)).clip(-100, 0).astype(np.float16)
               for n in frames]
    logmels[-1][:] = -80.0  # a silent clip: the colour mapping gives zeros
    stats = np.stack([clip_stats(m) for m in logmels])
    starts = random_starts(np.array(frames), crop, np.random.default_rng(1))
    crops = crop_rows([encode_logmel(m) for m in logmels], frames, starts, n_mels, crop,
                      stats[:, 2])
    return logmels, starts, crops, stats


@pytest.mark.parametrize("mode", ["color", "clip", "global"])
def test_per_crop_normalisation_equals_normalising_the_whole_clip(mode):
    norm = Normalisation(mode, mean=-45.0, std=15.0)
    logmels, starts, crops, stats = _stored_crops()
    ours = Frontend(norm).normalise(torch.from_numpy(crops), torch.from_numpy(stats))
    assert ours.shape == (4, 1, 32, 64) and ours.dtype == torch.float32
    ours = ours[:, 0].numpy()
    expected = np.stack([_reference_crop(norm.clip(m), s, 64)
                         for m, s in zip(logmels, starts, strict=True)])
    if mode == "color":  # equal uint8 levels, but for float ties at a level's edge
        assert np.abs(ours - expected).max() <= 1 / 255 + 1e-6
        assert (ours == expected).mean() > 0.999
    else:
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_unknown_normalisation():
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normalisation("nope").clip(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown normalisation"):
        Frontend(Normalisation("nope"))(torch.zeros(1, 2, 2), torch.zeros(1, 4))


def test_channels_are_copies_as_a_view_or_the_crop_and_its_deltas():
    _, _, crops, stats = _stored_crops()
    crops, stats = torch.from_numpy(crops), torch.from_numpy(stats)
    copies = Frontend(Normalisation("color"))(crops, stats)
    assert copies.shape == (4, 3, 32, 64) and copies.stride(1) == 0  # no copies made
    deltas = Frontend(Normalisation("clip", deltas=True))
    x = deltas(crops, stats)
    assert x.shape == (4, 3, 32, 64) and deltas.channels == 3
    torch.testing.assert_close(x[:, :1], deltas.normalise(crops, stats))
    torch.testing.assert_close(x[:, 1], time_delta(x[:, 0], 1))
    torch.testing.assert_close(x[:, 2], time_delta(x[:, 0], 2))


def test_band_centring_removes_a_fixed_spectral_colouring():
    rng = np.random.default_rng(0)
    db = rng.normal(-40, 10, size=(2, 8, 30)).astype(np.float32)
    colour = rng.normal(0, 6, size=(1, 8, 1)).astype(np.float32)  # a speaker's / mic's tilt
    norm = Normalisation("global", mean=-40.0, std=10.0, centre_bands=True)
    stats = torch.from_numpy(np.stack([clip_stats(x) for x in db]))
    plain = Frontend(norm).normalise(torch.from_numpy(db), stats)
    coloured = Frontend(norm).normalise(torch.from_numpy(db + colour), stats)
    torch.testing.assert_close(plain, coloured, atol=1e-4, rtol=0)  # the colouring is gone
    assert plain.mean(dim=-1).abs().max() < 1e-5  # every band of every window sits at 0
    uncentred = Frontend(Normalisation("global", mean=-40.0, std=10.0)).normalise(
        torch.from_numpy(db), stats)
    torch.testing.assert_close(plain, uncentred - uncentred.mean(dim=-1, keepdim=True))
    assert norm.to_dict()["centre_bands"] is True and norm.channels == 1


@pytest.mark.parametrize("norm", [
    Normalisation("clip"), Normalisation("global", mean=-45.0, std=15.0), Normalisation("color"),
    Normalisation("clip", deltas=True),
    Normalisation("global", mean=-45.0, std=15.0, centre_bands=True),
], ids=["clip", "global", "color", "deltas", "centre-bands"])
def test_the_tagger_scores_db_crops_as_the_network_scores_normalised_ones(norm):
    torch.manual_seed(0)
    network = torch.nn.Sequential(  # any network: the tagger only puts the frontend before it
        torch.nn.Conv2d(norm.channels, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    logmels, starts, crops, stats = _stored_crops()
    tagger = Tagger(Frontend(norm), network).eval()
    with torch.no_grad():
        logits = tagger(torch.from_numpy(crops), torch.from_numpy(stats))
        # The reference: each whole clip normalised, then cropped, then its channels.
        x = torch.from_numpy(np.stack([_reference_crop(norm.clip(m), s, 64)
                                       for m, s in zip(logmels, starts, strict=True)]))
        if norm.centre_bands:
            x = x - x.mean(dim=-1, keepdim=True)
        x = x[:, None]
        if norm.deltas:
            x = torch.cat([x, time_delta(x, 1), time_delta(x, 2)], dim=1)
        expected = network(x.expand(-1, norm.channels, -1, -1))
    assert logits.shape == (4, 5)
    tolerance = 2e-3 if norm.mode == "color" else 1e-4  # a level's edge, 1/255 apart
    torch.testing.assert_close(logits, expected, rtol=tolerance, atol=tolerance)
