"""The FAT2019 seed kernel's per-clip feature path in librosa: the reference fatlib is held to.

Used by parity tests and benchmarks only; production code goes through fatlib.core.audio and
fatlib.core.features, which compute the same values faster.
"""

from __future__ import annotations

import os

import librosa
import numpy as np

from fatlib.core.config import MelConfig


def seed_log_mel(path: str | os.PathLike, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Seed path: librosa.load -> effects.trim -> centred pad -> melspectrogram -> power_to_db."""
    y, sr = librosa.load(path, sr=cfg.sample_rate)
    if len(y) > 0 and cfg.trim_top_db is not None:
        y, _ = librosa.effects.trim(
            y,
            top_db=cfg.trim_top_db,
            frame_length=cfg.trim_frame_length,
            hop_length=cfg.trim_hop_length,
        )
    if len(y) < cfg.min_samples:
        missing = cfg.min_samples - len(y)
        y = np.pad(y, (missing // 2, missing - missing // 2), "constant")
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_mels=cfg.n_mels,
        hop_length=cfg.hop_length,
        n_fft=cfg.n_fft,
        fmin=cfg.fmin,
        fmax=cfg.fmax_hz,
    )
    return librosa.power_to_db(mel, ref=cfg.db_ref, amin=cfg.db_amin, top_db=cfg.db_top_db).astype(
        np.float32
    )
