"""Synthetic FAT2019-layout datasets: procedural sound classes that a tagger can learn.

Ten classes, each a distinct spectro-temporal pattern (tones, sweeps, clicks, band noise, ...)
with randomised parameters; clips mix 1-3 of them over background noise, framed by digital
silence. Everything is derived from one seed, clip by clip, so a dataset is reproducible.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from fatlib.core.cli import option
from fatlib.core.labels import join_labels
from fatlib.io.dataset import SPLITS, SUBMISSION_CSV, TRUTH_CSV


@dataclass(frozen=True)
class SynthConfig:
    """Size and character of a synthetic dataset."""

    n_curated: int = option(200, "train_curated clips", flag="curated")
    n_noisy: int = option(200, "train_noisy clips", flag="noisy")
    n_test: int = option(100, "test clips", flag="test")
    sample_rate: int = option(44100, "sample rate in Hz")
    min_seconds: float = option(0.3, "shortest clip, seconds")
    max_seconds: float = option(10.0, "longest clip, seconds")
    noisy_label_error: float = option(0.3, "share of the noisy split's labels that are wrong")
    seed: int = option(2019, "seed of every clip and label")


@dataclass
class SynthSummary:
    """What was written: per-split clip counts, label statistics and audio seconds."""

    root: Path
    classes: list[str]
    clips: dict[str, int] = field(default_factory=dict)
    labels_per_clip: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    wrong_noisy_labels: float = 0.0

    def format(self) -> str:
        """A short table: one line per split, then the classes."""
        lines = [f"{'split':<14} {'clips':>6} {'labels/clip':>12} {'audio-s':>9}"]
        for split in SPLITS:
            lines.append(
                f"{split:<14} {self.clips[split]:>6} {self.labels_per_clip[split]:>12.2f} "
                f"{self.seconds[split]:>9.1f}"
            )
        lines.append(f"noisy split: {100 * self.wrong_noisy_labels:.1f}% of labels are wrong")
        lines.append(f"{len(self.classes)} classes: {', '.join(self.classes)}")
        return "\n".join(lines)


# What generate_dataset writes under its root; --overwrite removes exactly these.
LAYOUT = (
    *SPLITS, "train_curated.csv", "train_noisy.csv", SUBMISSION_CSV, TRUTH_CSV
)


def generate_dataset(
    root: str | Path, cfg: SynthConfig = SynthConfig(), *, overwrite: bool = False
) -> SynthSummary:
    """Write a Kaggle-layout dataset under root (CSVs, split folders, test_truth.csv)."""
    if cfg.min_seconds <= 0 or cfg.max_seconds < cfg.min_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    if min(cfg.n_curated, cfg.n_noisy, cfg.n_test) < 0:
        raise ValueError("clip counts must not be negative")
    root = Path(root)
    _clear_layout(root, overwrite)
    classes = sorted(SOUND_CLASSES)
    sizes = dict(zip(SPLITS, (cfg.n_curated, cfg.n_noisy, cfg.n_test), strict=True))
    names = _clip_names(sum(sizes.values()), np.random.default_rng([cfg.seed, 0]))
    summary = SynthSummary(root=root, classes=classes)
    rows: dict[str, list[tuple[str, list[str]]]] = {}
    start = 0
    for split_index, split in enumerate(SPLITS):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows[split], seconds = [], 0.0
        for i, fname in enumerate(names[start : start + sizes[split]]):
            rng = np.random.default_rng([cfg.seed, 1 + split_index, i])
            labels = _draw_labels(classes, rng)
            audio = render_clip(labels, rng, cfg)
            sf.write(root / split / fname, audio, cfg.sample_rate, subtype="PCM_16")
            rows[split].append((fname, labels))
            seconds += len(audio) / cfg.sample_rate
        start += sizes[split]
        summary.clips[split] = len(rows[split])
        summary.seconds[split] = round(seconds, 2)
        summary.labels_per_clip[split] = float(np.mean([len(r[1]) for r in rows[split]] or [0]))
    noisy_rng = np.random.default_rng([cfg.seed, 99])
    rows["train_noisy"], summary.wrong_noisy_labels = _corrupt_labels(
        rows["train_noisy"], classes, cfg.noisy_label_error, noisy_rng
    )
    write_labels_csv(root / "train_curated.csv", rows["train_curated"])
    write_labels_csv(root / "train_noisy.csv", rows["train_noisy"])
    write_labels_csv(root / TRUTH_CSV, rows["test"])
    write_submission_template(root / SUBMISSION_CSV, [fname for fname, _ in rows["test"]], classes)
    return summary


def render_clip(labels: list[str], rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """One clip, float32 in [-1, 1]: the labelled events over faint noise, silence around."""
    sr = cfg.sample_rate
    seconds = float(np.exp(rng.uniform(np.log(cfg.min_seconds), np.log(cfg.max_seconds))))
    n = max(1, int(seconds * sr))
    # Digital silence before and after, up to a quarter of the clip each.
    lead, tail = (rng.uniform(0, 0.25, size=2) * n).astype(int)
    active = n - lead - tail
    body = rng.standard_normal(active) * 10 ** (rng.uniform(-3.5, -2.5))
    for name in labels:
        length = int(active * rng.uniform(0.5, 1.0))
        offset = rng.integers(0, active - length + 1)
        event = SOUND_CLASSES[name](length, sr, rng)
        body[offset : offset + length] += event * _fade(length, sr) * rng.uniform(0.2, 1.0)
    body *= rng.uniform(0.3, 0.9) / max(1e-9, float(np.abs(body).max()))
    clip = np.zeros(n, dtype=np.float32)
    clip[lead : lead + active] = body
    return clip


def _tone(freq_hz: np.ndarray | float, n: int, sr: int) -> np.ndarray:
    """Sine with a (possibly time-varying) frequency, by integrating the phase."""
    freq = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), (n,))
    return np.sin(2 * np.pi * np.cumsum(freq) / sr)


def _band_noise(n: int, sr: int, rng: np.random.Generator, lo_hz: float, hi_hz: float):
    """White noise restricted to [lo_hz, hi_hz] in the frequency domain, unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum[(freqs < lo_hz) | (freqs > min(hi_hz, sr / 2))] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / max(1e-9, float(np.abs(noise).max()))


def _hum(n, sr, rng):
    """Harmonic hum: a low fundamental and four overtones."""
    f0 = rng.uniform(80, 160)
    return sum(_tone(f0 * k, n, sr) / k for k in range(1, 6)) / 2


def _whistle(n, sr, rng):
    """High whistle with a slight vibrato."""
    t = np.arange(n) / sr
    return _tone(rng.uniform(1800, 3000) + 40 * np.sin(2 * np.pi * 5 * t), n, sr)


def _chirp_up(n, sr, rng):
    """Exponential sweep upwards."""
    return _tone(np.geomspace(rng.uniform(200, 400), rng.uniform(3000, 6000), n), n, sr)


def _chirp_down(n, sr, rng):
    """Exponential sweep downwards."""
    return _tone(np.geomspace(rng.uniform(3000, 6000), rng.uniform(200, 400), n), n, sr)


def _clicks(n, sr, rng):
    """A regular train of short clicks."""
    out = np.zeros(n)
    period = int(sr / rng.uniform(6, 15))
    out[rng.integers(0, period) :: period] = 1.0
    return np.convolve(out, np.hanning(32), mode="same")


def _hiss(n, sr, rng):
    """High-band noise."""
    return _band_noise(n, sr, rng, 6000, 12000)


def _rumble(n, sr, rng):
    """Low-band noise."""
    return _band_noise(n, sr, rng, 30, 250)


def _beeps(n, sr, rng):
    """A mid tone gated on and off a few times a second."""
    t = np.arange(n) / sr
    gate = (np.sin(2 * np.pi * rng.uniform(2, 4) * t) > 0).astype(np.float64)
    return _tone(rng.uniform(900, 1200), n, sr) * gate


def _warble(n, sr, rng):
    """A tone with deep, fast frequency modulation."""
    t = np.arange(n) / sr
    return _tone(rng.uniform(500, 800) * (1 + 0.25 * np.sin(2 * np.pi * 7 * t)), n, sr)


def _chord(n, sr, rng):
    """Three simultaneous tones of a major triad."""
    root = rng.uniform(300, 450)
    return sum(_tone(root * r, n, sr) for r in (1.0, 1.26, 1.5)) / 3


SOUND_CLASSES: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "Beeps": _beeps,
    "Chirp_down": _chirp_down,
    "Chirp_up": _chirp_up,
    "Chord": _chord,
    "Clicks": _clicks,
    "Hiss": _hiss,
    "Hum": _hum,
    "Rumble": _rumble,
    "Warble": _warble,
    "Whistle": _whistle,
}


def _fade(n: int, sr: int) -> np.ndarray:
    """10 ms raised-cosine ramps, so events start and stop without clicks."""
    ramp = min(n // 2, int(0.01 * sr))
    env = np.ones(n)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        env[:ramp], env[n - ramp :] = rise, rise[::-1]
    return env


def _draw_labels(classes: list[str], rng: np.random.Generator) -> list[str]:
    """1 label 60% of the time, 2 labels 30%, 3 labels 10%; sorted like FAT2019's CSVs."""
    k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    return sorted(rng.choice(classes, size=k, replace=False).tolist())


def _corrupt_labels(rows, classes, share, rng):
    """Replace `share` of all label slots by a class the clip does not carry."""
    slots = [(r, j) for r, (_, labels) in enumerate(rows) for j in range(len(labels))]
    n_wrong = int(round(share * len(slots)))
    picked = rng.choice(len(slots), size=n_wrong, replace=False) if slots else []
    labels = [list(lbls) for _, lbls in rows]
    for s in picked:
        r, j = slots[s]
        choices = [c for c in classes if c not in labels[r]]
        labels[r][j] = str(rng.choice(choices))
    corrupted = [(fname, sorted(lbls)) for (fname, _), lbls in zip(rows, labels, strict=True)]
    return corrupted, n_wrong / max(1, len(slots))


def _clip_names(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct random 8-hex-digit WAV names (they carry no label or split information)."""
    names: dict[str, None] = {}  # insertion-ordered, so the result depends on the seed only
    while len(names) < count:
        names[f"{int(rng.integers(0, 2**32)):08x}.wav"] = None
    return list(names)


def _clear_layout(root: Path, overwrite: bool) -> None:
    """Refuse to write over an existing dataset, or remove exactly its entries when asked."""
    existing = [root / entry for entry in LAYOUT if (root / entry).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{root} already holds a dataset ({existing[0].name})")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_submission_template(path: Path, fnames: list[str], classes: list[str]) -> None:
    """sample_submission.csv: fname and a zero column per class, the test clips in order."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", *classes])
        writer.writerows([fname, *([0] * len(classes))] for fname in fnames)


def write_labels_csv(path: Path, rows: list[tuple[str, list[str]]]) -> None:
    """fname,labels with the labels comma-joined in one quoted field, rows sorted by fname."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", "labels"])
        writer.writerows((fname, join_labels(labels)) for fname, labels in sorted(rows))
