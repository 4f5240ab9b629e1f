"""Shared fixtures: small synthetic audio written to temporary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 44100


def signals(sr: int = SR, seconds: float = 3.0) -> dict[str, np.ndarray]:
    """Test signals of the kinds the parity claims cover, float32 mono."""
    rng = np.random.default_rng(0)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    clicks = np.zeros(n)
    clicks[:: sr // 10] = 0.9
    padded = np.zeros(n)
    padded[n // 4 : n // 2] = rng.standard_normal(n // 2 - n // 4) * 0.05
    chirp = np.sin(2 * np.pi * np.cumsum(np.geomspace(50, 0.45 * sr, n)) / sr)
    return {
        "noise": (rng.standard_normal(n) * 0.1).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "chirp": (0.3 * chirp).astype(np.float32),
        "clicks": clicks.astype(np.float32),
        "silence_padded": padded.astype(np.float32),
        "short": (rng.standard_normal(int(0.4 * sr)) * 0.2).astype(np.float32),
    }


@pytest.fixture
def wav_dir(tmp_path: Path) -> Path:
    """Each test signal as a 16-bit WAV at 44.1 kHz in a temporary folder."""
    for name, y in signals().items():
        sf.write(tmp_path / f"{name}.wav", y, SR, subtype="PCM_16")
    return tmp_path
