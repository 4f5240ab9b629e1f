"""Audio in: decode -> mono -> resample -> trim silence -> pad, with one error type for bad files.

Everything here works on float32 numpy arrays of shape (n_samples,). `load_clip` is the whole
per-clip path that preprocessing and inference share; its semantics are the seed kernel's
(`librosa.load` + `librosa.effects.trim` + centred zero padding).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from fatlib.core.config import MelConfig
from fatlib.core.errors import UserError

AudioSource = str | os.PathLike | bytes
# Shorter decoded clips are refused rather than padded: a few samples padded to min_seconds
# would become a training row of almost pure zeros, labelled as if it held the sound.
MIN_SIGNAL_SECONDS = 0.1


class AudioError(UserError):
    """A clip cannot be turned into audio; `name` says which, `reason` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def load_clip(source: AudioSource, cfg: MelConfig, *, name: str | None = None) -> np.ndarray:
    """Decode a file (path or bytes) into the trimmed, padded mono signal at cfg.sample_rate."""
    name = name or _describe(source)
    y, sr = decode(source, name=name)
    return prepare_clip(y, sr, cfg, name=name)


def prepare_clip(y: np.ndarray, sample_rate: int, cfg: MelConfig, *, name: str) -> np.ndarray:
    """Decoded mono samples -> resampled, trimmed, padded signal at cfg.sample_rate; AudioError
    for a silent clip, one under MIN_SIGNAL_SECONDS, or one the resampler refuses."""
    if not np.any(y):
        raise AudioError(name, "all samples are zero (silent file)")
    if len(y) < MIN_SIGNAL_SECONDS * sample_rate:
        raise AudioError(name, f"too short: {len(y)} samples ({len(y) / sample_rate:.3f} s); "
                               f"at least {MIN_SIGNAL_SECONDS:g} s of signal needed")
    try:
        y = resample(y, sample_rate, cfg.sample_rate)
    except (RuntimeError, ValueError) as e:  # soxr's refusals of a rate or a size
        raise AudioError(name, f"cannot resample {sample_rate} Hz -> {cfg.sample_rate} Hz: "
                               f"{e}") from None
    if cfg.trim_top_db is not None:
        y, _ = trim_silence(
            y,
            top_db=cfg.trim_top_db,
            frame_length=cfg.trim_frame_length,
            hop_length=cfg.trim_hop_length,
        )
    return pad_centered(y, cfg.min_samples)


def decode(source: AudioSource, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read WAV/FLAC/OGG from a path or bytes as (mono float32 samples, native sample rate)."""
    name = name or _describe(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(name, "file not found")
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            truncated = _is_truncated(f.extra_info)
            sample_rate = f.samplerate
            y = _read_float32(f)
    except sf.LibsndfileError as e:
        raise AudioError(name, f"cannot decode: {e.error_string}") from None
    except (RuntimeError, TypeError, ValueError) as e:
        raise AudioError(name, f"cannot decode: {e}") from None
    if truncated:
        raise AudioError(name, "truncated: the header declares more audio than the file holds")
    if y.shape[0] == 0:
        raise AudioError(name, "no samples (zero-length audio)")
    # Mono as librosa.to_mono: the mean over channels.
    y = y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)
    if not np.isfinite(y).all():
        raise AudioError(name, "contains NaN or Inf samples")
    return y, int(sample_rate)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr 'HQ' to ceil(n * ratio) samples, exactly as librosa's default."""
    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(len(y) * target_sr / orig_sr))
    out = soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    if len(out) >= n_out:
        return out[:n_out]
    return np.pad(out, (0, n_out - len(out)))


def trim_silence(
    y: np.ndarray, *, top_db: float = 60.0, frame_length: int = 2048, hop_length: int = 512
) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut leading/trailing frames quieter than top_db below the loudest (librosa.effects.trim).

    Returns the trimmed view and its (start, end) sample bounds in y.
    """
    n = len(y)
    power = _frame_power(y, frame_length, hop_length)
    # librosa compares 10*log10(max(1e-10, p)) - 10*log10(max(1e-10, p_max)) > -top_db;
    # the same test without logarithms:
    amin = 1e-10
    threshold = max(amin, float(power.max(initial=0.0))) * 10.0 ** (-top_db / 10.0)
    loud = np.flatnonzero(np.maximum(power, amin) > threshold)
    if loud.size == 0:
        return y[:0], (0, 0)
    start = int(loud[0]) * hop_length
    end = min(n, (int(loud[-1]) + 1) * hop_length)
    return y[start:end], (start, end)


def pad_centered(y: np.ndarray, min_samples: int) -> np.ndarray:
    """Zero-pad y to min_samples, half before and half after (the extra sample goes after)."""
    missing = min_samples - len(y)
    if missing <= 0:
        return y
    before = missing // 2
    return np.pad(y, (before, missing - before))


def _read_float32(f: sf.SoundFile) -> np.ndarray:
    """All frames as (n, channels) float32 in [-1, 1), the values libsndfile's float read gives."""
    if f.subtype == "PCM_16":
        # libsndfile's own int16 -> float conversion costs ~3x the decode; i * 2**-15 is exact.
        y = f.read(dtype="int16", always_2d=True).astype(np.float32)
        y *= np.float32(2.0**-15)
        return y
    return f.read(dtype="float32", always_2d=True)


def _frame_power(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """Mean square per centred, zero-padded frame, as librosa.feature.rms(...)**2.

    Every frame starts and ends on a multiple of `block` samples, so frame sums come from a
    prefix sum over per-block energies: one pass over y instead of framing it.
    """
    n = len(y)
    block = math.gcd(hop_length, frame_length // 2, frame_length)
    n_blocks = -(-n // block)
    blocks = np.pad(y, (0, n_blocks * block - n)).reshape(n_blocks, block)
    cumulative = np.zeros(n_blocks + 1, dtype=np.float64)
    np.cumsum(np.einsum("ij,ij->i", blocks, blocks), out=cumulative[1:])
    starts = (np.arange(1 + n // hop_length) * hop_length - frame_length // 2) // block
    lo = np.clip(starts, 0, n_blocks)
    hi = np.clip(starts + frame_length // block, 0, n_blocks)
    return (cumulative[hi] - cumulative[lo]) / frame_length


def _is_truncated(sndfile_log: str) -> bool:
    """True when libsndfile's header log flags a data chunk longer than the file ("should be")."""
    return any(
        line.strip().startswith(("data", "SSND")) and "should be" in line
        for line in sndfile_log.splitlines()
    )


def _describe(source: AudioSource) -> str:
    """Name used in errors when the caller gave none."""
    return "<bytes>" if isinstance(source, bytes) else os.fspath(source)
