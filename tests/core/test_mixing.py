"""Sound mixing: power-domain sums of dB crops, union labels, seeded and shape-keeping."""

import numpy as np
import torch

from fatlib.core.frontend import Normalisation
from fatlib.core.inputs import HostBatch, InputSpec, to_device
from fatlib.core.mixing import SoundMix, crop_stats, sound_centres, sound_mix

SILENCE_DB = -200.0


def _batch(crops):
    db = torch.tensor(np.stack(crops), dtype=torch.float32)
    return db, crop_stats(db)


def test_a_clip_mixed_with_silence_is_the_clip():
    rng = np.random.default_rng(0)
    clip = rng.uniform(-80, 0, (8, 16))
    db, stats = _batch([clip, np.full((8, 16), SILENCE_DB)])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w = torch.ones(2)
    out, out_stats, out_y, _ = sound_mix(db, stats, y, w, np.random.default_rng(1), p=1.0,
                                         max_gain_db=6.0)
    np.testing.assert_allclose(out[0].numpy(), clip, atol=1e-4)
    np.testing.assert_allclose(out_stats[0].numpy(), crop_stats(db[:1])[0].numpy(), atol=1e-3)
    assert out_y[0].tolist() == [1.0, 0.0]


def test_equal_sounds_add_3_db_and_the_labels_are_the_union():
    db, stats = _batch([np.full((4, 6), -20.0), np.full((4, 6), -20.0)])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    w = torch.tensor([1.0, 0.5])
    out, _, out_y, out_w = sound_mix(db, stats, y, w, np.random.default_rng(0), p=1.0,
                                     max_gain_db=0.0)
    np.testing.assert_allclose(out.numpy(), -20.0 + 10 * np.log10(2), atol=1e-4)
    assert out_y.tolist() == [[1.0, 0.0, 0.5], [1.0, 0.0, 0.5]]
    assert out_w.tolist() == [0.5, 0.5]  # a mix is as trustworthy as its noisier part


def test_the_partner_overlaps_at_a_random_offset_and_gain():
    tone = np.full((4, 32), SILENCE_DB)
    tone[:, 5:9] = -10.0  # a short event in the partner
    db, stats = _batch([np.full((4, 32), SILENCE_DB), tone])
    out, _, _, _ = sound_mix(db, stats, torch.zeros(2, 1), torch.ones(2),
                             np.random.default_rng(3), p=1.0, max_gain_db=6.0)
    loud = np.flatnonzero(out[0, 0].numpy() > -100)
    assert len(loud) == 4  # the event, whole, circularly shifted
    level = float(out[0, 0, loud[0]])
    assert -16.0 <= level <= -4.0 and not np.isclose(level, -10.0)


def test_seeded_deterministic_and_shape_keeping():
    rng = np.random.default_rng(0)
    db = torch.tensor(rng.uniform(-80, 0, (16, 8, 20)), dtype=torch.float16)
    stats, y, w = crop_stats(db.float()), (torch.rand(16, 5) > 0.7).float(), torch.ones(16)
    a = sound_mix(db, stats, y, w, np.random.default_rng(7), p=0.5, max_gain_db=6.0)
    b = sound_mix(db, stats, y, w, np.random.default_rng(7), p=0.5, max_gain_db=6.0)
    for left, right, shape in zip(a, b, [(16, 8, 20), (16, 4), (16, 5), (16,)], strict=True):
        assert left.shape == shape and left.dtype == torch.float32
        assert torch.equal(left, right)
    changed = (a[0] != db.float()).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 16  # p = 0.5: some rows mixed, some not


def test_p_zero_leaves_the_batch_alone():
    db = torch.full((3, 4, 5), -30.0)
    out, _, y, _ = sound_mix(db, crop_stats(db), torch.eye(3), torch.ones(3),
                             np.random.default_rng(0), p=0.0, max_gain_db=6.0)
    assert torch.equal(out, db) and torch.equal(y, torch.eye(3))


def test_the_training_batch_mixes_before_the_normalisation():
    rng = np.random.default_rng(0)
    crops = torch.tensor(rng.uniform(-80, 0, (6, 8, 16)), dtype=torch.float16)
    host = HostBatch(crops, crop_stats(crops.float()), torch.eye(6)[:, :3].contiguous(),
                     torch.ones(6))
    spec = InputSpec(n_mels=8, crop_frames=16, norm=Normalisation("clip"),
                     mix=SoundMix(p=1.0))
    x, y, _ = to_device(host, spec, np.random.default_rng(1), torch.device("cpu"))
    assert x.shape == (6, 1, 8, 16)
    # per-clip standardisation from the mixed crops' own stats: each crop has mean 0, std 1
    np.testing.assert_allclose(x.mean(dim=(1, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(dim=(1, 2, 3), correction=0).numpy(), 1, atol=1e-3)
    assert (y.sum(1) >= 1).all()


def test_a_mixed_row_keeps_its_whole_clips_stats_moved_by_the_mixing():
    clip = np.random.default_rng(0).uniform(-60, -20, (8, 16))
    db = torch.tensor(np.stack([clip, np.full((8, 16), SILENCE_DB)]), dtype=torch.float32)
    whole = torch.tensor([[-50.0, 9.0, -80.0, -5.0], [SILENCE_DB, 0.0, SILENCE_DB, SILENCE_DB]])
    _, stats, _, _ = sound_mix(db, whole, torch.zeros(2, 1), torch.ones(2),
                               np.random.default_rng(1), p=1.0, max_gain_db=6.0)
    # Silence added changes nothing: the clip is still normalised with its whole clip's stats.
    np.testing.assert_allclose(stats[0].numpy(), whole[0].numpy(), atol=1e-3)
    # Silence with the clip added takes the mix's spread (its own was none).
    assert float(stats[1, 1]) > 1.0


def test_with_overlap_the_partners_sound_plays_over_the_crops_own():
    # Two short events far apart in their crops: mixed anywhere they mostly miss each other;
    # with overlap the partner's event lands on the crop's.
    a = np.full((4, 64), SILENCE_DB)
    a[:, 40:46] = -10.0
    b = np.full((4, 64), SILENCE_DB)
    b[:, 4:10] = -10.0
    db, stats = _batch([a, b])
    for seed in range(5):
        out, _, y, _ = sound_mix(db, stats, torch.eye(2), torch.ones(2),
                                 np.random.default_rng(seed), p=1.0, max_gain_db=0.0,
                                 overlap=True)
        loud = np.flatnonzero(out[0, 0].numpy() > -100)
        assert set(loud) <= set(range(37, 49))  # b's 6 frames within a's spread (1.7) of a's
        assert y[0].tolist() == [1.0, 1.0]


def test_sound_centres_are_where_the_power_is():
    db = torch.full((2, 4, 20), SILENCE_DB)
    db[0, :, 12:15] = -20.0  # an event at frames 12-14
    centre, spread = sound_centres(db)
    assert abs(float(centre[0]) - 13.0) < 1e-3 and 0.8 < float(spread[0]) < 0.9
    assert abs(float(centre[1]) - 9.5) < 1e-3  # silence: the middle


def test_shifted_sources_move_apart_before_the_mix():
    # Two crops with one band at bin 10: shifted after the mix they stay one band; shifted
    # each on its own first, the mix holds two bands (two voices) within the shift's reach.
    band = np.full((32, 16), SILENCE_DB)
    band[10] = -20.0
    crops = torch.tensor(np.stack([band, band]), dtype=torch.float16)
    host = HostBatch(crops, crop_stats(crops.float()), torch.eye(2), torch.ones(2))
    spec = InputSpec(n_mels=32, crop_frames=16, norm=Normalisation("clip"),
                     mix=SoundMix(p=1.0, max_gain_db=0.0), source_shift=3)
    bands = []
    for seed in range(8):
        x, y, _ = to_device(host, spec, np.random.default_rng(seed), torch.device("cpu"))
        loud = {int(b) for b in np.flatnonzero((x[0, 0] > 0).any(1).numpy())}
        assert loud and all(7 <= b <= 13 for b in loud) and y[0].tolist() == [1.0, 1.0]
        bands.append(len(loud))
    assert max(bands) == 2


def test_more_sources_add_more_partners_with_all_their_labels():
    db, stats = _batch([np.full((4, 6), -20.0)] * 3)
    y, w = torch.eye(3), torch.tensor([1.0, 0.5, 0.25])
    out, _, out_y, out_w = sound_mix(db, stats, y, w, np.random.default_rng(0), p=1.0,
                                     max_gain_db=0.0, sources=3)
    # Three sounds in every row (p = 1): +4.8 dB. Partners are drawn per source, so a row
    # may draw the same one twice: 2 or 3 labels, and the lowest weight among them.
    np.testing.assert_allclose(out.numpy(), -20.0 + 10 * np.log10(3), atol=1e-4)
    n = out_y.sum(1).numpy()
    assert set(n) <= {2.0, 3.0} and 3.0 in n
    lowest = [float(w[out_y[row] > 0].min()) for row in range(3)]
    assert out_w.tolist() == lowest
