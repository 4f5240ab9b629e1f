"""A test split of FAT2019's size and clip lengths, written fast, grown in place: the scale
benchmark's input (what a clip holds matters little there; how long it is and how many there are
do)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from fatlib.io.dataset import SUBMISSION_CSV
from fatlib.tools.synth import SOUND_CLASSES, SynthConfig, render_clip

# FAT2019: 4,970 curated clips of 0.3-57.6 s (mean 7.6 s, ~10.5 h) and 19,815 noisy clips cut
# from Flickr videos (up to 16 s, mean ~14.5 s, ~80 h): 25k clips, ~90 h.
CURATED_SHARE = 0.2
NOISY_FULL_SHARE = 0.75  # noisy clips that are the full 15 s cut; the rest are shorter
POOL_SOUNDS = 32  # distinct rendered sounds that every written clip is cut from
POOL_SECONDS = 8.0


def fat_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    """n clip lengths in seconds drawn like FAT2019's splits: mean ~13 s, 0.3-57.6 s."""
    curated = rng.random(n) < CURATED_SHARE
    # Curated: log-normal with median ~4.5 s and mean ~7.6 s, FAT2019's curated figures.
    short = np.clip(rng.lognormal(np.log(4.5), 1.0, n), 0.3, 57.6)
    full = rng.random(n) < NOISY_FULL_SHARE
    noisy = np.where(full, 15.0, rng.uniform(1.0, 15.0, n))
    return np.where(curated, short, noisy).round(3)


def wav_bytes(n_clips: int, sample_rate: int = 44100) -> int:
    """Expected bytes of n_clips 16-bit mono WAV files of FAT2019's lengths."""
    mean_seconds = fat_lengths(20_000, np.random.default_rng(0)).mean()  # ~12.1 s
    return int(n_clips * mean_seconds * sample_rate * 2)


@dataclass
class ScaleData:
    """A growing dataset root: test/ clips listed in sample_submission.csv."""

    root: Path
    sample_rate: int = 44100
    seed: int = 0
    names: list[str] = field(default_factory=list)
    seconds: float = 0.0  # audio seconds written so far

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "test").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([self.seed, 0])
        cfg = SynthConfig(sample_rate=self.sample_rate, min_seconds=POOL_SECONDS,
                          max_seconds=POOL_SECONDS)
        classes = sorted(SOUND_CLASSES)
        self._pool = [render_clip([classes[i % len(classes)]], rng, cfg)
                      for i in range(POOL_SOUNDS)]

    def grow_to(self, n_clips: int) -> list[str]:
        """Write clips until the split holds n_clips; returns the new clips' names."""
        start = len(self.names)
        if n_clips <= start:
            return []
        rng = np.random.default_rng([self.seed, 1, start])
        new = [f"scale_{i:07d}.wav" for i in range(start, n_clips)]
        for name, seconds in zip(new, fat_lengths(len(new), rng), strict=True):
            audio = self._clip(seconds, rng)
            sf.write(self.root / "test" / name, audio, self.sample_rate, subtype="PCM_16")
            self.seconds += len(audio) / self.sample_rate
        self.names.extend(new)
        self._write_csv()
        return new

    def _clip(self, seconds: float, rng: np.random.Generator) -> np.ndarray:
        """seconds of audio: a pool sound rolled and repeated at a random gain, float32."""
        sound = self._pool[int(rng.integers(len(self._pool)))]
        n = max(1, int(seconds * self.sample_rate))
        sound = np.roll(sound, int(rng.integers(len(sound))))
        reps = -(-n // len(sound))
        return (np.tile(sound, reps)[:n] * rng.uniform(0.3, 1.0)).astype(np.float32)

    def _write_csv(self) -> None:
        """sample_submission.csv listing every clip written, as Kaggle's test split has."""
        classes = sorted(SOUND_CLASSES)
        with open(self.root / SUBMISSION_CSV, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fname", *classes])
            writer.writerows([name, *([0] * len(classes))] for name in self.names)
