"""The one clip path: a stored audio file -> the core's log-mel, or a named AudioError; and the
one row builder preprocessing and inference share, with one set of per-clip failures."""

import os

import numpy as np
import pytest

from fatlib.core.audio import AudioError, load_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS, clip_stats, decode_logmel, log_mel
from fatlib.io.clips import clip_log_mel, clip_row


def test_clip_log_mel_is_the_core_path(wav_dir):
    cfg = MelConfig()
    logmel, seconds = clip_log_mel(str(wav_dir / "tone.wav"), "tone.wav", cfg)
    np.testing.assert_array_equal(logmel, log_mel(load_clip(wav_dir / "tone.wav", cfg), cfg))
    assert seconds == pytest.approx(3.0, abs=1e-3)


def test_missing_file_is_a_named_audio_error(tmp_path):
    with pytest.raises(AudioError, match="gone.wav: file not found"):
        clip_log_mel(str(tmp_path / "gone.wav"), "gone.wav", MelConfig())


def test_clip_row_holds_the_stored_log_mel_and_its_stats(wav_dir):
    cfg = MelConfig()
    row = clip_row(str(wav_dir / "tone.wav"), "tone.wav", cfg)
    expected = log_mel(load_clip(wav_dir / "tone.wav", cfg), cfg)
    assert (row["fname"], row["error"], row["n_frames"]) == ("tone.wav", "", expected.shape[1])
    stored = decode_logmel(row["logmel"], cfg.n_mels, row["n_frames"])
    np.testing.assert_array_equal(stored, expected.astype(np.float16))
    assert [row[name] for name in CLIP_STATS] == pytest.approx(clip_stats(expected).tolist())


@pytest.mark.bad_input
@pytest.mark.timeout(30)  # opening the FIFO for reading would block forever
def test_entries_that_are_not_readable_files_are_failed_rows(wav_dir):
    (wav_dir / "folder.wav").mkdir()
    os.mkfifo(wav_dir / "pipe.wav")
    (wav_dir / "loop.wav").symlink_to("loop.wav")
    (wav_dir / "dangling.wav").symlink_to("nowhere.wav")
    expected = {"folder.wav": "cannot read: is a directory",
                "pipe.wav": "cannot read: is a FIFO (named pipe)",
                "dangling.wav": "file not found", "gone.wav": "file not found"}
    if os.geteuid() != 0:  # root reads a file without permissions
        (wav_dir / "locked.wav").write_bytes((wav_dir / "tone.wav").read_bytes())
        (wav_dir / "locked.wav").chmod(0)
        expected["locked.wav"] = "cannot read:"
    for name, reason in expected.items():
        row = clip_row(str(wav_dir / name), name, MelConfig())
        assert row["error"].startswith(reason), (name, row["error"])
        assert (row["logmel"], row["n_frames"]) == (b"", 0)
    loop = clip_row(str(wav_dir / "loop.wav"), "loop.wav", MelConfig())["error"]
    assert loop.startswith("cannot read:") and "symbolic links" in loop
