"""What each Ray Train worker runs: the DDP training loop and validation over the whole fold."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray.train
import ray.train.torch
import torch

from fatlib.core.averaging import WeightAverage, ema_decay
from fatlib.core.frontend import Frontend, Tagger
from fatlib.core.inputs import InputSpec, batch_stats, host_batch, to_device
from fatlib.core.labels import multi_hot
from fatlib.core.losses import clip_bce, weighted_bce
from fatlib.core.metrics import lwlrap
from fatlib.core.models import build_model
from fatlib.core.prefetch import Prefetched
from fatlib.core.scoring import combine, tta_logits
from fatlib.stages.train.checkpoints import maybe_fail, report_epoch, restore, unwrap
from fatlib.stages.train.config import TrainConfig, format_history, steps_per_epoch
from fatlib.stages.train.datasets import shuffled_batches


@dataclass(frozen=True)
class WorkerInputs:
    """Everything the driver hands each worker (besides the dataset shards)."""

    cfg: TrainConfig
    classes: list[str]
    spec: InputSpec  # crops, input scaling and augmentations
    n_train: int  # training rows per epoch, for the length of the LR schedule
    threads: int  # torch threads per worker
    n_noisy: int = 0  # rows of the warm-up epochs' train_noisy (--noisy warmup), else 0


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: DDP ResNet, one-cycle AdamW, lwlrap on the whole fold each epoch.

    config: {"inputs": WorkerInputs} (Ray Train hands workers a dict).
    """
    inputs: WorkerInputs = config["inputs"]
    cfg = inputs.cfg
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(inputs.threads)
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    model = build_model(cfg.arch, len(inputs.classes), in_channels=inputs.spec.norm.channels)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch_steps = steps_per_epoch(inputs.n_train, cfg.batch_size, world)
    warmup = cfg.noisy_warmup if inputs.n_noisy else 0
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=(cfg.epochs - warmup) * epoch_steps +
        warmup * steps_per_epoch(inputs.n_noisy, cfg.batch_size, world))
    average = (WeightAverage(unwrap(model), ema_decay(cfg.ema, epoch_steps))
               if cfg.ema > 0 else None)
    start_epoch, history = restore(model, optimizer, scheduler, average)
    # A restored run first replays its finished epochs' metrics (no checkpoints), so whoever
    # watches the reports from scratch - a Tune trial resumed after its job was killed - sees
    # the whole run, even when no epoch is left to train.
    for metrics in history:
        ray.train.report(metrics, checkpoint=None)
    train_shard = ray.train.get_dataset_shard("train")
    noisy_shard = ray.train.get_dataset_shard("noisy") if warmup else None
    valid_shard = ray.train.get_dataset_shard("valid")
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch, rank])  # reproducible after a restart
        shard = noisy_shard if epoch < warmup else train_shard
        train_loss, samples, phases = _train_epoch(model, optimizer, scheduler, shard, inputs,
                                                   rng, device, average)
        trained = time.perf_counter()
        fnames, scores, truth, valid_loss = validation_scores(
            model if average is None else average.module, valid_shard, inputs, device,
            rank=rank, world=world)
        done = time.perf_counter()
        # train_time / samples is the stage's training throughput, validation apart.
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss,
                   "lwlrap": lwlrap(truth, scores), "time": done - started,
                   "lr": scheduler.get_last_lr()[0], "train_time": trained - started,
                   "valid_time": done - trained, "samples": samples, **phases}
        history.append(metrics)
        report_epoch(rank, model, optimizer, scheduler, history, metrics,
                     valid={"fname": fnames, "scores": scores}, average=average)
        if rank == 0:
            print(format_history(history, header=epoch == start_epoch, last_only=True), flush=True)
        maybe_fail(cfg, epoch, rank, world)


def validation_scores(model, shard, inputs: WorkerInputs, device, *, rank: int, world: int):
    """(fnames, scores, truth) of the whole validation fold, on every rank, and the mean
    valid loss.

    Each rank scores every world-th clip of the (unsplit) fold, all TTA windows of a batch of
    clips in one forward where they fit; the results are gathered, since lwlrap is not an
    average of per-shard values.
    """
    net = unwrap(model).eval()  # not the DDP wrapper: ranks score different numbers of batches
    if world > 1:
        # Every rank validates with the model rank 0 saves: DDP keeps the parameters equal, but
        # each rank's BatchNorm running statistics drift with its own batches (the reported
        # lwlrap was 0.9583 while the exported model scored 0.9660 on the same fold).
        for buffer in net.buffers():
            torch.distributed.broadcast(buffer, src=0)
    spec, cfg = inputs.spec, inputs.cfg
    tagger = Tagger(Frontend(spec.norm), net)  # the model as exported: dB crops in
    clips_per_batch = 256 if device.type == "cuda" else 64
    names, scores, truth, losses, seen = [], [], [], [], 0
    for batch in shard.iter_batches(batch_size=clips_per_batch, batch_format="numpy"):
        mine = (np.arange(seen, seen + len(batch["fname"])) % world) == rank
        seen += len(batch["fname"])
        if not mine.any():
            continue
        rows = {key: value[mine] for key, value in batch.items()}
        names.append(rows["fname"])
        logits = tta_logits(tagger, rows["logmel"], rows["n_frames"],
                            batch_stats(rows, spec.n_mels), spec.n_mels, spec.crop_frames,
                            cfg.valid_crops, device)
        y = torch.from_numpy(multi_hot(rows["labels"], inputs.classes))
        losses.append(clip_bce(logits, y[:, None, :].expand_as(logits)))
        scores.append(combine(logits))
        truth.append(y.numpy())
    parts = [(np.concatenate(scores), np.concatenate(truth), torch.cat(losses).numpy(),
              np.concatenate(names)) if scores else None]
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, parts[0])
        parts = gathered
    parts = [p for p in parts if p is not None]
    all_losses = np.concatenate([p[2] for p in parts])
    return (np.concatenate([p[3] for p in parts]), np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]), float(all_losses.mean()))


def _train_epoch(model, optimizer, scheduler, shard, inputs: WorkerInputs, rng,
                 device, average: WeightAverage | None = None) -> tuple[float, int, dict]:
    """One pass over this worker's shard: (mean training loss, samples) over all shards, and
    this worker's seconds in each phase of its loop.

    Nothing in the loop waits for the device (the loss is summed there, read once at the end),
    and the next batches are read and cut on a prefetch thread, so on a GPU they are ready
    while the current step runs. The phases: seconds the loop waited for a batch (data_time),
    seconds the prefetch thread spent cutting crops (host_time, overlapped), and the rest
    (step_time: copying, queueing the step, and on a GPU waiting for it when the device is
    the slower side).
    """
    world = ray.train.get_context().get_world_size()
    cuda = device.type == "cuda"
    model.train()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    # The host side (rows, shuffle, crops) and the device side (augmentations) draw from
    # separate streams, so the order the two threads run in never changes a batch.
    host_rng, device_rng = rng.spawn(2)
    host_seconds = [0.0]
    data_time = 0.0
    started = time.perf_counter()
    batches = _host_batches(shard, inputs, inputs.cfg.batch_size // world, host_rng, cuda,
                            host_seconds)
    with Prefetched(batches, depth=2) as ahead:
        while True:
            tick = time.perf_counter()
            host = next(ahead, None)
            data_time += time.perf_counter() - tick
            if host is None:
                break
            x, y, w = to_device(host, inputs.spec, device_rng, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            loss = weighted_bce(logits, y, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < scheduler.total_steps:
                scheduler.step()
            if average is not None:
                average.update(unwrap(model))
            total += loss.detach() * len(w)
            count += len(w)
    sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)])
    if world > 1:  # the epoch's loss over all shards, not rank 0's alone
        torch.distributed.all_reduce(sums)
    mean_loss, samples = float(sums[0] / max(1.0, float(sums[1]))), int(sums[1])  # waits
    elapsed = time.perf_counter() - started
    phases = {"data_time": data_time, "host_time": host_seconds[0],
              "step_time": elapsed - data_time}
    return mean_loss, samples, phases


def _host_batches(shard, inputs: WorkerInputs, batch_size: int, rng, pin: bool,
                  seconds: list[float]):
    """The shard's shuffled rows as host batches (crops cut, pinned on a GPU); adds the time
    spent cutting them to seconds[0]."""
    for batch in shuffled_batches(shard, batch_size, rng):
        tick = time.perf_counter()
        host = host_batch(batch, inputs.spec, inputs.classes, rng, pin=pin)
        seconds[0] += time.perf_counter() - tick
        yield host
