"""Audio loading: librosa.load / effects.trim semantics, centred padding, one error type."""

import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from fatlib.core.audio import AudioError, decode, load_clip, pad_centered, resample, trim_silence
from fatlib.core.config import MelConfig
from tests.conftest import SR, signals


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                          ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_decode_equals_librosa_load(tmp_path, fmt, subtype):
    stereo = np.stack([signals()["tone"], signals()["noise"]], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, stereo, SR, format=fmt, subtype=subtype)
    y, sr = decode(path)
    expected, _ = librosa.load(path, sr=None)
    assert sr == SR and y.dtype == np.float32
    np.testing.assert_array_equal(y, expected)


def test_decode_reads_bytes_like_a_path(wav_dir):
    path = wav_dir / "tone.wav"
    from_bytes, _ = decode(path.read_bytes(), name="tone.wav")
    np.testing.assert_array_equal(from_bytes, decode(path)[0])


@pytest.mark.parametrize("native_sr", [8000, 22050, 48000])
def test_resampling_equals_librosa(tmp_path, native_sr):
    path = tmp_path / "clip.wav"
    sf.write(path, signals(sr=native_sr)["chirp"], native_sr, subtype="PCM_16")
    y, sr = decode(path)
    expected, _ = librosa.load(path, sr=SR)
    ours = resample(y, sr, SR)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(signals()))
def test_trim_matches_librosa_within_one_hop(name):
    y = signals()[name]
    rng = np.random.default_rng(1)
    # Quiet lead-in and tail of different depths around the signal.
    y = np.concatenate([rng.standard_normal(9000) * 1e-5, y, rng.standard_normal(5000) * 1e-4])
    y = y.astype(np.float32)
    _, (start, end) = trim_silence(y, top_db=60)
    _, (ref_start, ref_end) = librosa.effects.trim(y, top_db=60)
    assert abs(start - ref_start) <= 512 and abs(end - ref_end) <= 512


def test_trim_cuts_digital_silence_exactly():
    y = np.zeros(30000, dtype=np.float32)
    y[10000:20000] = 0.5
    trimmed, (start, end) = trim_silence(y, top_db=60)
    _, expected = librosa.effects.trim(y, top_db=60)
    assert (start, end) == tuple(expected)
    assert len(trimmed) == end - start


def test_pad_centred_like_the_seed():
    y = np.ones(5, dtype=np.float32)
    padded = pad_centered(y, 10)
    np.testing.assert_array_equal(padded, [0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    assert pad_centered(y, 3) is y  # longer clips are kept whole, never cut


def test_load_clip_trims_then_pads_to_two_seconds(tmp_path):
    y = np.zeros(SR, dtype=np.float32)
    y[SR // 4 : SR // 2] = signals()["tone"][: SR // 4]
    sf.write(tmp_path / "c.wav", y, SR, subtype="FLOAT")
    clip = load_clip(tmp_path / "c.wav", MelConfig())
    assert len(clip) == 2 * SR
    loud = np.flatnonzero(np.abs(clip) > 0)
    # The sound sits in the middle once silence is trimmed and padding is centred.
    assert abs((loud[0] + loud[-1]) / 2 - SR) < 600


def _wav_bytes(y, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, SR, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (_wav_bytes(np.zeros(0, dtype=np.float32)), "zero-length"),
        (_wav_bytes(np.zeros(SR, dtype=np.float32)), "silent"),
        (_wav_bytes(np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), "FLOAT"), "NaN"),
        (_wav_bytes(np.array([0.1, np.inf, 0.2] * 100, dtype=np.float32), "FLOAT"), "Inf"),
        (_wav_bytes(signals()["noise"])[:20000], "truncated"),
        (b"this is a text file, not audio" * 10, "cannot decode"),
        (_wav_bytes(signals()["noise"])[:30], "cannot decode"),
    ],
    ids=["empty", "silent", "nan", "inf", "truncated", "not-audio", "header-only"],
)
def test_bad_files_raise_one_audio_error_naming_the_file(payload, reason):
    with pytest.raises(AudioError, match=reason) as info:
        load_clip(payload, MelConfig(), name="bad.wav")
    assert info.value.name == "bad.wav"
    assert str(info.value).startswith("bad.wav: ")


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_clip(tmp_path / "nope.wav", MelConfig())
