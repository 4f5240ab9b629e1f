"""The one clip path: a stored audio file -> the core's log-mel, or a named AudioError."""

import numpy as np
import pytest

from fatlib.core.audio import AudioError, load_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import log_mel
from fatlib.io.clips import clip_log_mel


def test_clip_log_mel_is_the_core_path(wav_dir):
    cfg = MelConfig()
    logmel, seconds = clip_log_mel(str(wav_dir / "tone.wav"), "tone.wav", cfg)
    np.testing.assert_array_equal(logmel, log_mel(load_clip(wav_dir / "tone.wav", cfg), cfg))
    assert seconds == pytest.approx(3.0, abs=1e-3)


def test_missing_file_is_a_named_audio_error(tmp_path):
    with pytest.raises(AudioError, match="gone.wav: file not found"):
        clip_log_mel(str(tmp_path / "gone.wav"), "gone.wav", MelConfig())
