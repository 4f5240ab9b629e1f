"""The one clip path: an audio file (local or s3://) -> its log-mel, as preprocessing and
inference both compute it."""

from __future__ import annotations

import numpy as np

from fatlib.core.audio import AudioError, decode, prepare_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import log_mel
from fatlib.io import storage


def clip_log_mel(uri: str, fname: str, mel: MelConfig) -> tuple[np.ndarray, float]:
    """(log-mel (n_mels, n_frames), decoded seconds) of the clip at uri; AudioError if bad."""
    try:
        data = storage.read_bytes(uri)
    except storage.StorageError:
        raise AudioError(fname, "file not found") from None
    y, sample_rate = decode(data, name=fname)
    logmel = log_mel(prepare_clip(y, sample_rate, mel, name=fname), mel)
    if not np.isfinite(logmel).all():
        raise AudioError(fname, "log-mel has non-finite values")
    return logmel, len(y) / sample_rate
