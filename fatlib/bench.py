"""Benchmarks behind BENCHMARKS.md: each returns a result object that jobs/benchmark.py prints."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fatlib.audio import load_clip
from fatlib.config import MelConfig
from fatlib.features import log_mel
from fatlib.seed import seed_log_mel
from fatlib.synth import SOUND_CLASSES, SynthConfig, render_clip


@dataclass
class FeatureBench:
    """Per-core throughput of the seed path and fatlib's on the same clips, and their gap in dB."""

    n_clips: int
    clip_seconds: float
    seed_audio_s_per_s: float
    fatlib_audio_s_per_s: float
    max_abs_db_diff: float

    @property
    def speedup(self) -> float:
        """fatlib's throughput over the seed path's."""
        return self.fatlib_audio_s_per_s / self.seed_audio_s_per_s

    def format(self) -> str:
        """Human-readable report, one figure per line."""
        return "\n".join(
            [
                f"clips: {self.n_clips} x {self.clip_seconds:g} s WAV, 1 thread",
                f"seed path (librosa):  {self.seed_audio_s_per_s:8.0f} audio-s/s "
                f"({1e3 * self.clip_seconds / self.seed_audio_s_per_s:.2f} ms/clip)",
                f"fatlib path:          {self.fatlib_audio_s_per_s:8.0f} audio-s/s "
                f"({1e3 * self.clip_seconds / self.fatlib_audio_s_per_s:.2f} ms/clip)",
                f"speedup per core:     {self.speedup:8.2f}x",
                f"max |dB difference|:  {self.max_abs_db_diff:8.5f}",
            ]
        )


def bench_features(
    n_clips: int = 40, clip_seconds: float = 5.0, rounds: int = 5, cfg: MelConfig = MelConfig()
) -> FeatureBench:
    """Time decode -> trim -> pad -> log-mel per clip, seed path vs fatlib, on one thread."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp:
        paths = _write_clips(Path(tmp), n_clips, clip_seconds, cfg.sample_rate)
        seed_out = [seed_log_mel(p, cfg) for p in paths]  # warm-up and reference values
        ours_out = [log_mel(load_clip(p, cfg), cfg) for p in paths]
        max_diff = max(float(np.abs(a - b).max()) for a, b in zip(seed_out, ours_out, strict=True))
        seed_s = _best_time(lambda: [seed_log_mel(p, cfg) for p in paths], rounds)
        ours_s = _best_time(lambda: [log_mel(load_clip(p, cfg), cfg) for p in paths], rounds)
    audio_seconds = n_clips * clip_seconds
    return FeatureBench(
        n_clips=n_clips,
        clip_seconds=clip_seconds,
        seed_audio_s_per_s=audio_seconds / seed_s,
        fatlib_audio_s_per_s=audio_seconds / ours_s,
        max_abs_db_diff=max_diff,
    )


def _write_clips(folder: Path, n_clips: int, seconds: float, sample_rate: int) -> list[Path]:
    """Synthetic 16-bit WAV clips of exactly `seconds`, silence at both ends, like FAT2019's."""
    cfg = SynthConfig(sample_rate=sample_rate, min_seconds=seconds, max_seconds=seconds)
    classes = sorted(SOUND_CLASSES)
    paths = []
    for i in range(n_clips):
        rng = np.random.default_rng([7, i])
        labels = sorted(rng.choice(classes, size=1 + i % 3, replace=False).tolist())
        path = folder / f"{i:04d}.wav"
        sf.write(path, render_clip(labels, rng, cfg), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def _best_time(work: Callable[[], object], rounds: int) -> float:
    """Fastest wall time of `rounds` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)
