"""Benchmarks of the model path behind BENCHMARKS.md (training steps, the
inference stage); jobs/benchmark.py prints their results."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fatlib.core.config import MelConfig
from fatlib.tools.seed import seed_log_mel
from fatlib.tools.synth import SOUND_CLASSES, SynthConfig


@dataclass
class TrainBench:
    """Training throughput: Ray Train DDP vs a plain PyTorch loop, same model/batch/threads."""

    arch: str
    batch_size: int
    crop_frames: int
    threads: int
    plain_samples_per_s: float
    ray_samples_per_s: float
    ray_workers: int
    worker_peak_rss_mb: list[float]

    def format(self) -> str:
        """Human-readable report."""
        return "\n".join([
            f"{self.arch}, global batch {self.batch_size}, 1 x 128 x {self.crop_frames} crops, "
            f"{self.threads} threads in total, forward + backward + AdamW",
            f"plain PyTorch loop (1 process):   {self.plain_samples_per_s:8.1f} samples/s",
            f"Ray Train DDP ({self.ray_workers} workers, gloo):   "
            f"{self.ray_samples_per_s:8.1f} samples/s",
            f"ratio Ray Train / plain:          "
            f"{self.ray_samples_per_s / self.plain_samples_per_s:8.2f}",
            "peak RSS per worker: " + ", ".join(f"{r:.0f} MB" for r in self.worker_peak_rss_mb),
        ])


def bench_train(
    steps: int = 12, batch_size: int = 64, crop_frames: int = 128, workers: int = 2,
    arch: str = "resnet18",
) -> TrainBench:
    """Samples/s of training steps on random inputs: one process with `workers` threads vs
    Ray Train with `workers` single-thread DDP workers (the data path is measured elsewhere)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from fatlib.stages.runtime import start_local_ray
    from fatlib.stages.train.rendezvous import NodeBoundTorchConfig

    config = {"steps": steps, "batch": batch_size, "crop": crop_frames, "arch": arch}
    torch.set_num_threads(workers)
    plain = _training_steps(config, batch_size)
    start_local_ray(num_cpus=workers, log_to_driver=False)  # loopback only, as the jobs' Ray
    try:
        with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp:
            result = TorchTrainer(
                _ray_training_steps,
                train_loop_config=config,
                torch_config=NodeBoundTorchConfig(),  # DDP listens on the node address only
                scaling_config=ray.train.ScalingConfig(num_workers=workers,
                                                       resources_per_worker={"CPU": 1}),
                run_config=ray.train.RunConfig(storage_path=tmp, name="bench"),
            ).fit()
    finally:
        ray.shutdown()
    return TrainBench(arch=arch, batch_size=batch_size, crop_frames=crop_frames, threads=workers,
                      plain_samples_per_s=plain, ray_samples_per_s=result.metrics["samples_per_s"],
                      ray_workers=workers, worker_peak_rss_mb=result.metrics["peak_rss_mb"])


def _training_steps(config: dict, local_batch: int, wrap=lambda m: m) -> float:
    """Samples/s (counting local_batch per step) of timed steps after two warm-up steps."""
    from fatlib.core.models import build_model

    torch.manual_seed(0)
    model = wrap(build_model(config["arch"], 80))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(local_batch, 1, 128, config["crop"])
    y = (torch.rand(local_batch, 80) < 0.05).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    return config["steps"] * local_batch / (time.perf_counter() - start)


def _ray_training_steps(config: dict) -> None:
    """Ray Train worker of `bench_train`: one thread, DDP, report global samples/s and RSS."""
    import resource

    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    world = ray.train.get_context().get_world_size()
    local = _training_steps(config, config["batch"] // world, ray.train.torch.prepare_model)
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0])
    rates = torch.tensor([local])
    if world > 1:
        gathered_rss = [torch.zeros(1) for _ in range(world)]
        torch.distributed.all_gather(gathered_rss, rss)
        torch.distributed.all_reduce(rates)
        rss = torch.cat(gathered_rss)
    metrics = {"samples_per_s": float(rates.sum()), "peak_rss_mb": rss.tolist()}
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    # Train V2 keeps the metrics of reports that carry a checkpoint only.
    with tempfile.TemporaryDirectory() as folder:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


@dataclass
class InferBench:
    """Inference throughput: the Ray Data stage vs a notebook-style per-clip loop."""

    n_clips: int
    naive_clips_per_s: dict[int, float]  # tta -> clips/s
    stage_clips_per_s: dict[int, float]

    def format(self) -> str:
        """Human-readable report."""
        lines = [f"{self.n_clips} clips (1-15 s, 16-bit WAV 44.1 kHz), ResNet-18, 2 CPUs"]
        for tta in sorted(self.stage_clips_per_s):
            naive, stage = self.naive_clips_per_s[tta], self.stage_clips_per_s[tta]
            lines.append(f"TTA {tta}: notebook loop {naive:6.1f} clips/s, fatlib stage "
                         f"{stage:6.1f} clips/s ({stage / naive:.2f}x)")
        return "\n".join(lines)


def bench_infer(n_clips: int = 400, ttas: tuple[int, ...] = (1, 8), threads: int = 2) -> InferBench:
    """Clips/s from audio to scores: jobs/infer's stage vs a per-clip librosa + model loop."""
    import ray

    from fatlib.core.frontend import Normalisation
    from fatlib.core.models import build_model
    from fatlib.io.artifact import ModelMeta, load_model, save_artifact
    from fatlib.io.dataset import read_split
    from fatlib.stages.infer.config import InferConfig
    from fatlib.stages.infer.pipeline import infer
    from fatlib.stages.runtime import start_local_ray
    from fatlib.tools.synth import generate_dataset

    with tempfile.TemporaryDirectory(prefix="fatlib-bench-") as tmp:
        data, model_uri = Path(tmp) / "data", str(Path(tmp) / "model")
        generate_dataset(data, SynthConfig(n_curated=0, n_noisy=0, n_test=n_clips,
                                           min_seconds=1.0, max_seconds=15.0))
        classes = sorted(SOUND_CLASSES)
        meta = ModelMeta(arch="resnet18", classes=classes, mel=MelConfig(), crop_frames=128,
                         normalisation=Normalisation("global", -50.0, 20.0), recipe="default")
        save_artifact(model_uri, meta, build_model("resnet18", len(classes)).state_dict())
        clips = read_split(str(data), "test", classes)
        torch.set_num_threads(threads)
        model = load_model(model_uri)[1].network  # the notebook normalises clips itself
        # Warm, as the stage is: librosa compiles its kernels on the first clip.
        _notebook_scores(model, seed_log_mel(clips[0].uri), meta.normalisation, 128, 1)
        naive = {}
        for tta in ttas:
            start = time.perf_counter()
            for clip in clips:  # the notebook way: one clip at a time, librosa features
                _notebook_scores(model, seed_log_mel(clip.uri), meta.normalisation, 128, tta)
            naive[tta] = len(clips) / (time.perf_counter() - start)
        start_local_ray(num_cpus=threads, log_to_driver=False)  # loopback only, as the jobs'
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            stage = {}
            for i, tta in enumerate(ttas):
                cfg = InferConfig(models=(model_uri,), data=str(data), out=str(Path(tmp) / "p"),
                                  run_id=f"b{i}", tta=tta)
                infer(cfg)  # warm: worker processes and actors start
                start = time.perf_counter()
                infer(cfg)
                stage[tta] = len(clips) / (time.perf_counter() - start)
        finally:
            ray.shutdown()
    return InferBench(n_clips=len(clips), naive_clips_per_s=naive, stage_clips_per_s=stage)


def _notebook_scores(model: torch.nn.Module, logmel: np.ndarray, norm, crop: int,
                     tta: int) -> np.ndarray:
    """A notebook's per-clip TTA: normalise the whole clip, cut tta windows, one forward."""
    from fatlib.core.inputs import tta_starts

    x = norm.clip(logmel)
    if x.shape[1] < crop:  # pad short clips with their floor, centred
        pad = crop - x.shape[1]
        x = np.pad(x, ((0, 0), (pad // 2, pad - pad // 2)), constant_values=x.min())
    windows = np.stack([x[:, s : s + crop] for s in tta_starts(x.shape[1], crop, tta)])
    batch = torch.from_numpy(windows)[:, None].expand(-1, norm.channels, -1, -1)
    with torch.no_grad():
        return torch.sigmoid(model(batch)).mean(dim=0).numpy()
