"""Benchmarks of whole stages on one device behind BENCHMARKS.md: the training stage's steady
samples/s against the train step alone, and the inference stage's crops/s against the network
alone, on a synthetic feature store (random log-mels, no audio to decode). Made for a GPU
(`--device cuda`: bf16, channels_last, GPU utilisation sampled with nvidia-smi); `--device cpu`
runs the same code at toy sizes."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS
from fatlib.tools.bench_input import N_CLASSES, N_MELS, stored_rows

CLASSES = [f"class{i:02d}" for i in range(N_CLASSES)]


@dataclass
class StageBench:
    """A stage's steady throughput next to the network alone on the same device."""

    what: str  # "training samples/s" or "inference crops/s"
    device: str
    stage_rate: float
    ceiling_rate: float
    notes: list[str] = field(default_factory=list)
    gpu_util: tuple[float, float] | None = None  # mean, peak percent while the stage ran

    def format(self) -> str:
        """One figure per line."""
        lines = [f"device: {self.device}",
                 f"stage:          {self.stage_rate:10.0f} {self.what}",
                 f"network alone:  {self.ceiling_rate:10.0f} {self.what}",
                 f"ratio:          {self.stage_rate / self.ceiling_rate:10.2f}"]
        if self.gpu_util is not None:
            lines.append(f"GPU utilisation while the stage ran: mean {self.gpu_util[0]:.0f}%, "
                         f"peak {self.gpu_util[1]:.0f}%")
        return "\n".join(lines + self.notes)


def bench_train_stage(device: str = "cuda", clips: int = 8192, epochs: int = 3,
                      batch_size: int = 256) -> StageBench:
    """jobs/train.py's stage on one worker: steady samples/s of its training passes (epochs
    after the first, validation timed apart) against the train step alone."""
    from fatlib.stages.train.config import TrainConfig
    from fatlib.stages.train.driver import train

    cuda = device == "cuda"
    with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp, _local_ray():
        features = _fake_store(Path(tmp) / "features", {"train_curated": clips})
        cfg = TrainConfig(features=features, out=str(Path(tmp) / "run"), workers=1,
                          gpus_per_worker=1.0 if cuda else 0.0, epochs=epochs,
                          batch_size=batch_size, valid_crops=3)
        with _GpuMonitor(cuda) as monitor:
            result = train(cfg)
    steady = result.history[1:] or result.history
    rate = sum(h["samples"] for h in steady) / sum(h["train_time"] for h in steady)
    valid = np.mean([h["valid_time"] for h in steady])
    ceiling = _step_alone(torch.device(device), batch_size, channels=3)
    phases = {k: sum(h[k] for h in steady) / len(steady)
              for k in ("data_time", "host_time", "step_time")}
    notes = [f"{clips} clips (80% train), batch {batch_size}, {epochs} epochs; validation "
             f"{valid:.1f} s an epoch, apart",
             "phases, seconds an epoch: the loop waiting for a batch "
             f"{phases['data_time']:.2f}, copy + step {phases['step_time']:.2f}; the prefetch "
             f"thread cutting crops {phases['host_time']:.2f} (overlapped)"]
    return StageBench("training samples/s", _device_name(device), rate, ceiling, notes,
                      monitor.summary())


def bench_infer_stage(device: str = "cuda", clips: int = 8192, tta: int = 4,
                      actors: tuple[int, ...] = (1,)) -> StageBench:
    """jobs/infer.py's stage from a feature store: crops/s of a warm run for each number of
    scoring actors (sharing the GPU on a GPU) against the network alone (bf16 + channels_last
    on a GPU, batches of 1024); the figure is the best count's."""
    from fatlib.core.frontend import Normalisation
    from fatlib.core.models import build_model
    from fatlib.io.artifact import ModelMeta, save_artifact
    from fatlib.stages.infer.config import InferConfig
    from fatlib.stages.infer.pipeline import infer

    cuda = device == "cuda"
    rates, notes, utils = {}, [], {}
    with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp, _local_ray():
        features = _fake_store(Path(tmp) / "features", {"test": clips})
        model = str(Path(tmp) / "model")
        meta = ModelMeta(arch="resnet18", classes=CLASSES, mel=MelConfig(), crop_frames=128,
                         normalisation=Normalisation("color"), recipe="default")
        save_artifact(model, meta, build_model("resnet18", N_CLASSES, in_channels=3).state_dict())
        for n in actors:
            # n actors share the card (or the CPUs) equally.
            cfg = InferConfig(models=(model,), data=features, out=str(Path(tmp) / f"p{n}"),
                              tta=tta, gpus_per_worker=1.0 / n if cuda else 0.0, workers=n,
                              run_id="warm")
            infer(cfg)  # warm: actors start, CUDA initialises
            with _GpuMonitor(cuda) as monitor:
                started = time.perf_counter()
                infer(replace(cfg, run_id="timed"))
                seconds = time.perf_counter() - started
            rates[n], utils[n] = clips * tta / seconds, monitor.summary()
            util = "" if utils[n] is None else f", GPU utilisation mean {utils[n][0]:.0f}%"
            notes.append(f"actors {n}: {rates[n]:.0f} crops/s ({clips} clips x TTA {tta} from "
                         f"a feature store in {seconds:.1f} s{util})")
    best = max(rates, key=rates.get)
    ceiling = _forward_alone(torch.device(device), 1024 if cuda else 32, channels=3)
    return StageBench("inference crops/s", _device_name(device), rates[best], ceiling,
                      notes + [f"figure above: {best} actor(s)"], utils[best])


def _fake_store(root: Path, splits: dict[str, int]) -> str:
    """A feature store of random 320-640-frame log-mels with one random label a clip."""
    from fatlib.io import storage
    from fatlib.io.feature_rows import write_rows
    from fatlib.io.feature_store import SplitInfo, new_manifest
    from fatlib.io.store_commits import commit_split

    mel = MelConfig()
    manifest = new_manifest(mel, CLASSES, "synthetic")
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        staged = str(root / "_staging" / split)
        files, rows = [], 0
        for part in range(0, n, 512):
            batch = stored_rows(min(512, n - part), rng)
            columns = {"fname": [f"{split}-{part + i}.wav" for i in range(len(batch["logmel"]))],
                       "labels": [list(v) for v in batch["labels"]],
                       "n_frames": [int(f) for f in batch["n_frames"]],
                       "seconds": [f / mel.frames_per_second for f in batch["n_frames"]],
                       "logmel": list(batch["logmel"]),
                       **{name: batch[name].tolist() for name in CLIP_STATS}}
            files.append(f"part-{part:06d}.parquet")
            write_rows(storage.join(staged, files[-1]), columns, mel, split)
            rows += len(columns["fname"])
        commit_split(str(root), manifest, staged, SplitInfo(split, files, rows, 0, 0.0, 0, 0, 0.0))
    return str(root)


def _step_alone(device: torch.device, batch: int, channels: int, steps: int = 30) -> float:
    """Samples/s of the ResNet-18 train step on inputs already on the device (bf16 autocast
    and channels_last on a GPU, as the stage runs)."""
    from fatlib.core.losses import weighted_bce
    from fatlib.core.models import build_model

    cuda = device.type == "cuda"
    model = build_model("resnet18", N_CLASSES, in_channels=channels).to(device)
    x = torch.randn(batch, channels, N_MELS, 128, device=device)
    if cuda:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    y = (torch.rand(batch, N_CLASSES, device=device) < 0.02).float()
    w = torch.ones(batch, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        optimizer.zero_grad(set_to_none=True)
        weighted_bce(logits, y, w).backward()
        optimizer.step()

    return _rate(step, batch, steps if cuda else 3, device)


def _forward_alone(device: torch.device, batch: int, channels: int, steps: int = 30) -> float:
    """Crops/s of ResNet-18 forwards on inputs already on the device."""
    from fatlib.core.models import build_model

    cuda = device.type == "cuda"
    model = build_model("resnet18", N_CLASSES, in_channels=channels).to(device).eval()
    x = torch.randn(batch, channels, N_MELS, 128, device=device)
    if cuda:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            model(x)

    return _rate(forward, batch, steps if cuda else 3, device)


def _rate(work, batch: int, steps: int, device: torch.device) -> float:
    """Items/s of work() after warm-up, waiting for the device before reading the clock."""
    for _ in range(3):
        work()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        work()
    _sync(device)
    return steps * batch / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    """Wait for queued device work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    """The card's name, or the CPU."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


@contextmanager
def _local_ray() -> Iterator[None]:
    """An embedded Ray for one benchmark, with every CPU and GPU of this machine."""
    import ray

    from fatlib.stages.runtime import start_local_ray

    start_local_ray(log_to_driver=False)  # loopback only, as the jobs' Ray
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


class _GpuMonitor:
    """GPU utilisation sampled twice a second with nvidia-smi while the block runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.samples = enabled, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _GpuMonitor:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def summary(self) -> tuple[float, float] | None:
        """(mean, peak) percent, or None when nothing was sampled."""
        return (float(np.mean(self.samples)), float(max(self.samples))) if self.samples else None

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return  # no nvidia-smi: no figure rather than a wrong one
