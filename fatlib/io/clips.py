"""The one clip path: an audio file (local or s3://) -> its log-mel, or the reason it failed, as
preprocessing and inference both compute it."""

from __future__ import annotations

import numpy as np

from fatlib.core.audio import AudioError, decode, prepare_clip
from fatlib.core.config import MelConfig
from fatlib.core.errors import redact
from fatlib.core.features import CLIP_STATS, clip_stats, encode_logmel, log_mel
from fatlib.io import storage
from fatlib.io.files import special_file_kind

# What reading and decoding one clip can raise because of that clip (a directory, a FIFO, a
# symlink loop, no permission, a vanished object, undecodable or too short audio): the clip is
# a failed row, the others go on. Anything else is a bug in fatlib and stays a traceback.
CLIP_FAILURES = (AudioError, storage.StorageError, OSError)


def clip_row(uri: str, fname: str, mel: MelConfig) -> dict:
    """One clip's feature row: fname, logmel (float16 bytes), n_frames, seconds, CLIP_STATS and
    error ("" when it converted, else why not: then logmel is b"" and the numbers are 0)."""
    try:
        logmel, seconds = clip_log_mel(uri, fname, mel)
    except CLIP_FAILURES as e:
        return {"fname": fname, "logmel": b"", "n_frames": 0, "seconds": 0.0,
                **dict.fromkeys(CLIP_STATS, 0.0), "error": failure_reason(e)}
    stats = clip_stats(logmel)
    return {"fname": fname, "logmel": encode_logmel(logmel), "n_frames": int(logmel.shape[1]),
            "seconds": float(seconds), **{name: float(v) for name, v in zip(CLIP_STATS, stats,
                                                                             strict=True)},
            "error": ""}


def clip_log_mel(uri: str, fname: str, mel: MelConfig) -> tuple[np.ndarray, float]:
    """(log-mel (n_mels, n_frames), decoded seconds) of the clip at uri; AudioError if it is
    missing, not a regular file or bad audio, OSError if it cannot be read."""
    try:
        kind = special_file_kind(uri)  # before opening: a FIFO would block the read
        if kind is not None:
            raise AudioError(fname, f"cannot read: is {kind}")
        data = storage.read_bytes(uri)
    except (FileNotFoundError, storage.StorageError):
        raise AudioError(fname, "file not found") from None
    y, sample_rate = decode(data, name=fname)
    logmel = log_mel(prepare_clip(y, sample_rate, mel, name=fname), mel)
    if not np.isfinite(logmel).all():
        raise AudioError(fname, "log-mel has non-finite values")
    return logmel, len(y) / sample_rate


def failure_reason(e: Exception) -> str:
    """The errors table's reason for a clip that raised one of CLIP_FAILURES."""
    if isinstance(e, AudioError):
        return e.reason
    return redact(f"cannot read: {e}")
