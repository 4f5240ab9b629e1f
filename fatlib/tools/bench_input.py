"""Benchmark of the training worker's input path behind BENCHMARKS.md: samples/s per CPU core
from stored rows (float16 log-mel bytes + clip stats) to network inputs, before and after
issue 13; jobs/benchmark.py prints it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fatlib.core.augment import compose
from fatlib.core.features import CLIP_STATS, clip_stats, encode_logmel
from fatlib.core.frontend import Normalisation
from fatlib.core.inputs import (
    InputSpec,
    host_batch,
    random_starts,
    to_device,
    training_batch,
)

N_MELS, N_CLASSES = 128, 80


@dataclass
class InputBench:
    """Samples/s on one thread of each way of building a batch."""

    batch_size: int
    crop_frames: int
    rates: dict[str, float]

    def format(self) -> str:
        """One line per variant."""
        lines = [f"batch {self.batch_size} of {N_MELS} x {self.crop_frames} colour crops from "
                 f"stored 320-640-frame clips, 1 thread ({torch.get_num_threads()} torch)"]
        lines += [f"{name:<58} {rate:9.0f} samples/s" for name, rate in self.rates.items()]
        return "\n".join(lines)


def bench_input(batch_size: int = 256, crop_frames: int = 128, rounds: int = 10,
                n_clips: int = 1024) -> InputBench:
    """Time each way of building a batch from the same stored rows, on one thread."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = stored_rows(n_clips, rng)
    classes = [f"class{i:02d}" for i in range(N_CLASSES)]
    plain = InputSpec(N_MELS, crop_frames, Normalisation("color"))
    augmented = InputSpec(N_MELS, crop_frames, Normalisation("color"),
                          compose([("mixup", {"alpha": 0.4}), ("specaugment", {})]))
    cpu = torch.device("cpu")

    def batches() -> dict:
        take = rng.choice(n_clips, size=batch_size, replace=False)
        return {k: v[take] for k, v in rows.items()}

    variants: dict[str, Callable[[dict], object]] = {
        "before: whole-clip colour mapping, list of crops": lambda b: _before(b, crop_frames, rng),
        "host half: crops sliced from the bytes (a GPU worker's CPU)":
            lambda b: host_batch(b, plain, classes, rng),
        "both halves on this CPU (colour, 3 channels)":
            lambda b: training_batch(b, plain, classes, rng, cpu),
        "both halves on this CPU + mixup + SpecAugment":
            lambda b: to_device(host_batch(b, augmented, classes, rng), augmented, rng, cpu),
    }
    rates = {}
    for name, work in variants.items():
        work(batches())  # warm
        inputs = [batches() for _ in range(rounds)]
        start = time.perf_counter()
        for batch in inputs:
            work(batch)
        rates[name] = rounds * batch_size / (time.perf_counter() - start)
    return InputBench(batch_size=batch_size, crop_frames=crop_frames, rates=rates)


def stored_rows(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Feature-store rows: 320-640-frame float16 log-mels as bytes, their stats, labels."""
    frames = rng.integers(320, 641, size=n)
    logmel = np.empty(n, dtype=object)
    labels = np.empty(n, dtype=object)
    stats = np.empty((n, len(CLIP_STATS)), dtype=np.float32)
    for i, f in enumerate(frames):
        db = rng.normal(-45, 12, size=(N_MELS, int(f))).clip(-80, 0).astype(np.float16)
        logmel[i], stats[i] = encode_logmel(db), clip_stats(db)
        labels[i] = [f"class{int(rng.integers(N_CLASSES)):02d}"]
    return {"logmel": logmel, "n_frames": frames, "labels": labels,
            "weight": np.ones(n, dtype=np.float32),
            **{name: stats[:, i] for i, name in enumerate(CLIP_STATS)}}


def _before(batch: dict, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """The worker's input path before issue 13: decode and colour-map each whole clip, cut
    its crop, stack, copy to 3 channels."""
    norm = Normalisation("color")
    clips = [norm.clip(np.frombuffer(b, dtype="<f2").reshape(N_MELS, int(n)))
             for b, n in zip(batch["logmel"], batch["n_frames"], strict=True)]
    starts = random_starts(batch["n_frames"], crop, rng)
    x = np.stack([c[:, s : s + crop] for c, s in zip(clips, starts, strict=True)])
    return torch.from_numpy(x).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
