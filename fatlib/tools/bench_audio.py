"""Benchmarks of the audio path behind BENCHMARKS.md (per-clip features, the preprocessing
stage), each against the seed's librosa path; jobs/benchmark.py prints their results."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fatlib.core.audio import load_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import log_mel
from fatlib.tools.seed import seed_log_mel
from fatlib.tools.synth import SOUND_CLASSES, SynthConfig, render_clip


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
        seed_s = best_time(lambda: [seed_log_mel(p, cfg) for p in paths], rounds)
        ours_s = best_time(lambda: [log_mel(load_clip(p, cfg), cfg) for p in paths], rounds)
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


def best_time(work: Callable[[], object], rounds: int) -> float:
    """Fastest wall time of `rounds` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class PreprocessBench:
    """Preprocessing throughput: seed loop vs the Ray Data stage with 1..N workers."""

    n_clips: int
    audio_seconds: float
    seed_audio_s_per_s: float
    stage_audio_s_per_s: dict[int, float]  # workers -> audio-seconds per second (warm)
    cold_audio_s_per_s: float  # first run, worker processes starting
    bytes_per_audio_second: float

    def format(self) -> str:
        """Human-readable report."""
        lines = [f"clips: {self.n_clips} ({self.audio_seconds:.0f} audio-s), 16-bit WAV 44.1 kHz",
                 f"seed loop (librosa, 1 process):  {self.seed_audio_s_per_s:8.0f} audio-s/s"]
        one = self.stage_audio_s_per_s.get(1)
        for workers, rate in sorted(self.stage_audio_s_per_s.items()):
            scaling = f", {rate / one:.2f}x of 1 worker" if one and workers > 1 else ""
            lines.append(f"fatlib stage, {workers} worker(s):     {rate:8.0f} audio-s/s "
                         f"({rate / self.seed_audio_s_per_s:.2f}x seed{scaling})")
        lines.append(f"first run (cold workers):         {self.cold_audio_s_per_s:8.0f} audio-s/s")
        lines.append(f"stored: {self.bytes_per_audio_second / 1024:.1f} KiB per audio-second "
                     f"(16-bit WAV: {2 * 44100 / 1024:.1f} KiB)")
        return "\n".join(lines)


def bench_preprocess(
    n_clips: int = 300, workers: tuple[int, ...] = (1, 2), rounds: int = 2
) -> PreprocessBench:
    """Time the preprocessing stage per worker count and the seed's per-clip loop, same files."""
    import ray

    from fatlib.io.dataset import read_split
    from fatlib.io.feature_store import FeatureStore
    from fatlib.stages.preprocess.config import PreprocessConfig
    from fatlib.stages.preprocess.convert import preprocess
    from fatlib.tools.synth import generate_dataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp:
        data = Path(tmp) / "data"
        # FAT2019-like lengths: 1-15 s, log-uniform (mean ~5 s).
        generate_dataset(data, SynthConfig(n_curated=n_clips, n_noisy=0, n_test=0,
                                           min_seconds=1.0, max_seconds=15.0))
        clips = read_split(str(data), "train_curated", sorted(SOUND_CLASSES))
        seed_s = best_time(lambda: [seed_log_mel(c.uri) for c in clips], rounds)
        ray.init(address="local", num_cpus=max(workers), include_dashboard=False,
                 log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            out = str(Path(tmp) / "features")

            def run(n_workers: int) -> float:
                cfg = PreprocessConfig(data=str(data), out=out, splits=("train_curated",),
                                       workers=n_workers, overwrite=True)
                start = time.perf_counter()
                preprocess(cfg)
                return time.perf_counter() - start

            cold_s = run(max(workers))
            stage_s = {w: min(run(w) for _ in range(rounds)) for w in workers}
            split = FeatureStore.open(out).split("train_curated")
        finally:
            ray.shutdown()
    audio = split.audio_seconds
    return PreprocessBench(
        n_clips=n_clips,
        audio_seconds=audio,
        seed_audio_s_per_s=audio / seed_s,
        stage_audio_s_per_s={w: audio / s for w, s in stage_s.items()},
        cold_audio_s_per_s=audio / cold_s,
        bytes_per_audio_second=split.bytes / audio,
    )
