"""Training stage: a DDP ResNet on the feature store with Ray Train, checkpointed and resumable.

The driver validates the store, splits the curated clips into stratified folds and hands Ray
Data shards to `train_loop_per_worker`; the best checkpoint by lwlrap becomes the model artifact
(<run>/model), with <run>/metrics.json and <run>/history.csv beside it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow.parquet as pq
import ray
import ray.data
import ray.train
import torch
from ray.train.torch import TorchTrainer

from fatlib import storage
from fatlib.artifact import ModelMeta, save_artifact
from fatlib.augment import Normalisation, crop_batch, mixup, random_starts, spec_augment
from fatlib.config import ConfigError, MelConfig
from fatlib.errors import UserError
from fatlib.feature_store import (
    FeatureStoreError,
    decode_logmel,
    read_manifest,
    read_split_table,
    require_fingerprint,
    split_files,
)
from fatlib.folds import stratified_folds
from fatlib.labels import LabelError, multi_hot
from fatlib.metrics import lwlrap
from fatlib.models import ARCHITECTURES, build_model
from fatlib.runtime import cluster_cpus, ensure_ray
from fatlib.scoring import combine, tta_logits

RECIPES = ("default", "seed")
# Loading the store is I/O-bound and brief; fractional CPUs let it run beside training workers
# that hold whole CPUs (concurrent Tune trials on a small cluster would otherwise wait forever).
_LOADING_CPUS = 0.25
STATE_FILE = "state.pt"


class RunDirError(UserError):
    """The run directory is in a state the request does not fit (exists / nothing to resume)."""


@dataclass(frozen=True)
class TrainConfig:
    """Inputs of the training stage; defaults are the seed recipe's budget and crop."""

    features: str
    out: str
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: the cluster's CPUs shared among workers
    epochs: int = 5
    lr: float = 3e-3  # one-cycle maximum
    weight_decay: float = 1e-2
    batch_size: int = 64  # global; each worker takes batch_size / workers
    crop_frames: int = 128
    fold: int = 0
    n_folds: int = 5
    noisy: str = "off"  # "mix": add train_noisy to the training batches
    noisy_weight: float = 0.5  # loss weight of a noisy clip relative to a curated one
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    specaugment: bool = False
    arch: str = "resnet18"
    recipe: str = "default"  # "seed": the seed kernel's 3-channel per-clip uint8 input
    # Input scaling: "color" (the seed's per-clip uint8 mapping; won on fsdd-fat's held-out
    # speaker, BENCHMARKS.md), "clip" (per-clip standardisation) or "global" (training stats).
    normalisation: str = "color"
    valid_crops: int = 3  # evenly spaced windows per validation clip, sigmoids averaged
    resume: bool = False
    seed: int = 0
    keep_checkpoints: int = 2  # best by lwlrap; the latest is always kept too
    max_failures: int = 3
    mel: MelConfig = field(default_factory=MelConfig)
    report: bool = True  # draw <run>/report.html and its pictures at the end
    fail_after_epoch: int | None = None  # fault drill: one worker dies once after this epoch

    def check(self) -> None:
        """ConfigError naming the first invalid value."""
        checks = [
            (self.workers >= 1, "workers must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.lr > 0, "lr must be positive"),
            (self.batch_size >= self.workers, "batch size must be >= the number of workers"),
            (self.crop_frames >= 8, "crop frames must be >= 8"),
            (self.n_folds >= 2 and 0 <= self.fold < self.n_folds, "need 0 <= fold < K, K >= 2"),
            (self.noisy in ("off", "mix"), "noisy must be 'off' or 'mix'"),
            (self.mixup >= 0, "mixup alpha must be >= 0"),
            (self.arch in ARCHITECTURES, f"arch must be one of {sorted(ARCHITECTURES)}"),
            (self.recipe in RECIPES, f"recipe must be one of {RECIPES}"),
            (self.recipe != "seed" or (self.mixup == 0 and not self.specaugment),
             "the seed recipe has no mixup or SpecAugment"),
            (self.valid_crops >= 1, "valid crops must be >= 1"),
            (self.normalisation in ("color", "clip", "global"),
             "normalisation must be color, clip or global"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: str
    artifact: str
    best_epoch: int
    best_lwlrap: float
    history: list[dict]

    report: str = ""

    def table(self) -> str:
        """The per-epoch history as fastai prints it."""
        return format_history(self.history)

    def summary(self) -> str:
        """The table, the best epoch and where the model (and report) are."""
        lines = [self.table(), f"best epoch {self.best_epoch}: lwlrap {self.best_lwlrap:.4f}; "
                               f"model: {self.artifact}"]
        return "\n".join(lines + ([f"report: {self.report}"] if self.report else []))


@dataclass
class TrainingInputs:
    """What the driver derives from the store before training: classes, fold, normalisation."""

    classes: list[str]
    curated: dict  # fname, labels, n_frames, targets of train_curated
    valid_names: set[str]
    norm: Normalisation


def training_inputs(cfg: TrainConfig) -> TrainingInputs:
    """Validate the store against cfg, split the curated clips, fit the input normalisation."""
    cfg.check()
    manifest = read_manifest(cfg.features)
    if manifest is None:
        raise FeatureStoreError(f"{cfg.features}: no feature store here (_MANIFEST.json missing)")
    require_fingerprint(manifest, cfg.mel, cfg.features)
    classes = list(manifest["classes"])
    curated = _read_labels(cfg.features, "train_curated", cfg.mel, classes)
    if len(curated["fname"]) < cfg.n_folds * 2:
        raise FeatureStoreError(f"{cfg.features}: train_curated has {len(curated['fname'])} clips, "
                                f"too few for {cfg.n_folds} folds (need >= {cfg.n_folds * 2})")
    folds = stratified_folds(curated["targets"], cfg.n_folds, cfg.seed)
    valid_names = set(np.asarray(curated["fname"])[folds == cfg.fold])
    return TrainingInputs(classes, curated, valid_names, _normalisation(cfg, curated, valid_names))


def train(cfg: TrainConfig, callbacks: tuple = ()) -> TrainResult:
    """Train on the feature store's curated fold (plus noisy clips), export the best model.

    callbacks: extra Ray Train callbacks (Tune passes its report callback here).
    """
    cfg = replace(cfg, features=storage.absolute(cfg.features), out=storage.absolute(cfg.out))
    cfg.check()
    _check_run_dir(cfg)
    inputs = training_inputs(cfg)
    classes, valid_names, norm = inputs.classes, inputs.valid_names, inputs.norm
    ensure_ray()
    train_ds, valid_ds = _datasets(cfg, valid_names)
    n_train, n_valid = train_ds.count(), valid_ds.count()
    cpus = cfg.cpus_per_worker or max(1.0, cluster_cpus() // cfg.workers)
    loop_config = {"cfg": cfg, "classes": classes, "norm": norm, "n_train": n_train,
                   "n_valid": n_valid, "threads": max(1, int(cpus))}
    storage_path, name = run_location(cfg.out)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=cfg.gpus_per_worker > 0,
            resources_per_worker={"CPU": cpus, **({"GPU": cfg.gpus_per_worker}
                                                  if cfg.gpus_per_worker > 0 else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute="lwlrap",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            callbacks=list(callbacks),
        ),
        datasets={"train": train_ds, "valid": valid_ds},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    steps_per_epoch = math.ceil((n_train // cfg.workers) / (cfg.batch_size // cfg.workers))
    exported = _export(cfg, result, classes, norm, steps_per_epoch)
    if cfg.report:
        from fatlib.report import write_report  # the report draws on this module

        exported.report = write_report(cfg.out, cfg.features).html
    return exported


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: DDP ResNet, one-cycle AdamW, lwlrap on the whole fold each epoch."""
    cfg: TrainConfig = config["cfg"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    norm: Normalisation = config["norm"]
    classes = config["classes"]
    model = build_model(cfg.arch, len(classes), in_channels=norm.channels)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_worker_batch = cfg.batch_size // world
    steps_per_epoch = math.ceil((config["n_train"] // world) / per_worker_batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    start_epoch, history = _restore(model, optimizer, scheduler)
    # A restored run first replays its finished epochs' metrics (no checkpoints), so whoever
    # watches the reports from scratch - a Tune trial resumed after its job was killed - sees
    # the whole run, even when no epoch is left to train.
    for metrics in history:
        ray.train.report(metrics, checkpoint=None)
    train_shard = ray.train.get_dataset_shard("train")
    valid_shard = ray.train.get_dataset_shard("valid")
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch, rank])  # reproducible after a restart
        train_loss = _train_epoch(model, optimizer, scheduler, train_shard, config, rng, device)
        scores, truth, valid_loss = validation_scores(
            model, valid_shard, classes, norm, cfg, device, rank=rank, world=world
        )
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "lwlrap": lwlrap(truth, scores),
            "time": time.perf_counter() - started,
            "lr": scheduler.get_last_lr()[0],
        }
        history.append(metrics)
        _report(rank, model, optimizer, scheduler, history, metrics)
        if rank == 0:
            print(format_history(history, header=epoch == start_epoch, last_only=True), flush=True)
        _maybe_fail(cfg, epoch, rank)


def format_history(history: list[dict], header: bool = True, last_only: bool = False) -> str:
    """fastai's table: epoch, train_loss, valid_loss, lwlrap, time."""
    lines = [f"{'epoch':>5}  {'train_loss':>10}  {'valid_loss':>10}  {'lwlrap':>8}  {'time':>6}"]
    rows = history[-1:] if last_only else history
    for h in rows:
        minutes, seconds = divmod(int(round(h["time"])), 60)
        lines.append(f"{h['epoch']:>5}  {h['train_loss']:>10.6f}  {h['valid_loss']:>10.6f}  "
                     f"{h['lwlrap']:>8.6f}  {minutes:02d}:{seconds:02d}")
    return "\n".join(lines if header else lines[1:])


def _train_epoch(model, optimizer, scheduler, shard, config, rng, device) -> float:
    """One pass over this worker's shard; returns the mean training loss."""
    cfg: TrainConfig = config["cfg"]
    norm: Normalisation = config["norm"]
    index = {c: i for i, c in enumerate(config["classes"])}
    world = ray.train.get_context().get_world_size()
    model.train()
    total, count = 0.0, 0
    batches = shard.iter_batches(
        batch_size=cfg.batch_size // world,
        batch_format="numpy",
        local_shuffle_buffer_size=min(4 * cfg.batch_size, max(1, config["n_train"] // world)),
        local_shuffle_seed=int(rng.integers(2**31)),
    )
    for batch in batches:
        x, y, w = training_batch(batch, cfg, norm, index, rng)
        x, y, w = x.to(device), y.to(device), w.to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        per_clip = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), y, reduction="none").mean(dim=1)
        loss = (per_clip * w).sum() / w.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler.last_epoch < scheduler.total_steps:
            scheduler.step()
        total += loss.item() * len(w)
        count += len(w)
    sums = torch.tensor([total, float(count)], dtype=torch.float64)
    if world > 1:  # the epoch's loss over all shards, not rank 0's alone
        torch.distributed.all_reduce(sums)
    return float(sums[0] / max(1.0, float(sums[1])))


def validation_scores(model, shard, classes, norm, cfg: TrainConfig, device, *, rank, world):
    """Scores and truth for the whole validation fold, on every rank, and the mean valid loss.

    Each rank scores every world-th clip of the (unsplit) fold; the results are gathered, since
    lwlrap is not an average of per-shard values.
    """
    net = _unwrap(model).eval()  # not the DDP wrapper: ranks score different numbers of batches
    index = {c: i for i, c in enumerate(classes)}
    scores, truth, losses, seen = [], [], [], 0
    for batch in shard.iter_batches(batch_size=64, batch_format="numpy"):
        mine = (np.arange(seen, seen + len(batch["fname"])) % world) == rank
        seen += len(batch["fname"])
        if not mine.any():
            continue
        clips = [norm.clip(decode_logmel(b, cfg.mel.n_mels, n))
                 for b, n in zip(batch["logmel"][mine], batch["n_frames"][mine], strict=True)]
        logits = tta_logits(net, clips, norm, cfg.crop_frames, cfg.valid_crops, device)
        y = torch.from_numpy(_targets(batch["labels"][mine], index))
        losses.append(torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y[:, None, :].expand_as(logits), reduction="none").mean(dim=(1, 2)))
        scores.append(combine(logits))
        truth.append(y.numpy())
    parts = [(np.concatenate(scores), np.concatenate(truth), torch.cat(losses).numpy())
             if scores else None]
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, parts[0])
        parts = gathered
    parts = [p for p in parts if p is not None]
    all_losses = np.concatenate([p[2] for p in parts])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            float(all_losses.mean()))


def training_batch(batch: dict, cfg: TrainConfig, norm: Normalisation, index: dict[str, int],
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature rows (logmel, n_frames, labels, weight) -> inputs (B, C, n_mels, crop),
    targets (B, n_classes) and loss weights (B,): random crops, then mixup / SpecAugment."""
    clips = [norm.clip(decode_logmel(b, cfg.mel.n_mels, n))
             for b, n in zip(batch["logmel"], batch["n_frames"], strict=True)]
    x = crop_batch(clips, random_starts(batch["n_frames"], cfg.crop_frames, rng), cfg.crop_frames)
    x = torch.from_numpy(x).unsqueeze(1).expand(-1, norm.channels, -1, -1).contiguous()
    y = torch.from_numpy(_targets(batch["labels"], index))
    w = torch.from_numpy(np.asarray(batch["weight"], dtype=np.float32))
    if cfg.mixup > 0:
        x, y, w = mixup(x, y, w, cfg.mixup, rng)
    if cfg.specaugment:
        x = spec_augment(x, rng)
    return x, y, w


def _targets(label_lists, index: dict[str, int]) -> np.ndarray:
    """Multi-hot rows for a batch's label lists (labels were validated on the driver)."""
    y = np.zeros((len(label_lists), len(index)), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        y[row, [index[name] for name in labels]] = 1.0
    return y


def _restore(model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Continue from the latest checkpoint when Ray Train hands one over (restart or resume)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu",
                           weights_only=False)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["history"]


def _report(rank, model, optimizer, scheduler, history, metrics) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint of this epoch."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="fatlib-ckpt-") as folder:
        torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": metrics["epoch"],
                    "history": history}, os.path.join(folder, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _maybe_fail(cfg: TrainConfig, epoch: int, rank: int) -> None:
    """Fault drill: the last worker dies once, after the given epoch's checkpoint."""
    if cfg.fail_after_epoch is None or epoch + 1 != cfg.fail_after_epoch:
        return
    marker = storage.join(cfg.out, ".fault-drill-done")
    if rank == ray.train.get_context().get_world_size() - 1 and not storage.exists(marker):
        storage.write_bytes(marker, b"1")
        os._exit(1)  # a hard crash, as a lost node looks to Ray Train


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def _read_labels(features: str, split: str, mel: MelConfig, classes: list[str]) -> dict:
    """fname, labels, n_frames and multi-hot targets of a split (no log-mels)."""
    table = read_split_table(features, split, mel, columns=["fname", "labels", "n_frames"])
    fnames = table.column("fname").to_pylist()
    labels = table.column("labels").to_pylist()
    frames = table.column("n_frames").to_pylist()
    if not fnames:
        raise FeatureStoreError(f"{features}: split {split} has no clips")
    try:
        targets = multi_hot(labels, classes, names=fnames)
    except LabelError as e:
        raise FeatureStoreError(f"{features}/{split}: {e}") from None
    return {"fname": fnames, "labels": labels, "n_frames": frames, "targets": targets}


def _normalisation(cfg: TrainConfig, curated: dict, valid_names: set) -> Normalisation:
    """The seed's per-clip colour mapping, per-clip standardisation, or global dB mean/std."""
    if cfg.recipe == "seed" or cfg.normalisation in ("color", "clip"):
        return Normalisation(mode="color" if cfg.recipe == "seed" else cfg.normalisation)
    train_names = [f for f in curated["fname"] if f not in valid_names]
    rng = np.random.default_rng(cfg.seed)
    sample = set(rng.choice(train_names, size=min(500, len(train_names)), replace=False))
    total, total_sq, count = 0.0, 0.0, 0
    for uri in split_files(cfg.features, "train_curated", cfg.mel):
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        for row in table.to_pylist():
            if row["fname"] in sample:
                x = decode_logmel(row["logmel"], cfg.mel.n_mels, row["n_frames"]).astype(np.float64)
                total, total_sq, count = total + x.sum(), total_sq + (x**2).sum(), count + x.size
    mean = total / count
    return Normalisation(mode="global", mean=float(mean),
                         std=float(np.sqrt(max(total_sq / count - mean**2, 1e-6))))


def _datasets(cfg: TrainConfig, valid_names: set) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Materialised training and validation datasets (rows: fname, labels, n_frames, logmel,
    weight); materialised so no read task waits for a CPU the training workers hold."""
    curated = _read_split_dataset(cfg, "train_curated")
    valid = sorted(valid_names)

    def select(ds: ray.data.Dataset, names: list[str], keep: bool, weight: float):
        return ds.map_batches(_select, fn_kwargs={"names": names, "keep": keep, "weight": weight},
                              batch_format="numpy", num_cpus=_LOADING_CPUS)

    train_ds = select(curated, valid, False, 1.0)
    valid_ds = select(curated, valid, True, 1.0)
    if cfg.noisy == "mix":
        train_ds = train_ds.union(select(_read_split_dataset(cfg, "train_noisy"), [], False,
                                         cfg.noisy_weight))
    return train_ds.materialize(), valid_ds.materialize()


def _read_split_dataset(cfg: TrainConfig, split: str) -> ray.data.Dataset:
    """A committed split's Parquet files (exactly those the manifest lists) as a Dataset."""
    files = split_files(cfg.features, split, cfg.mel)
    fs, _ = storage.resolve(files[0])
    paths = [storage.resolve(f)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs, num_cpus=_LOADING_CPUS)
    return ds.select_columns(["fname", "labels", "n_frames", "logmel"])


def _select(batch: dict, names: list[str], keep: bool, weight: float) -> dict:
    """Rows whose fname is (keep) or is not (not keep) in names, with a loss-weight column."""
    mask = np.isin(batch["fname"], names)
    mask = mask if keep else ~mask
    out = {key: value[mask] for key, value in batch.items()}
    out["weight"] = np.full(int(mask.sum()), weight, dtype=np.float32)
    return out


def _check_run_dir(cfg: TrainConfig) -> None:
    """A new run needs a fresh directory; --resume needs an existing one."""
    exists = has_run(cfg.out)
    if exists and not cfg.resume:
        raise RunDirError(f"{cfg.out} already holds a run; pass --resume to continue it "
                          "or choose another --out")
    if cfg.resume and not exists:
        raise RunDirError(f"{cfg.out}: no run to resume")


def has_run(uri: str) -> bool:
    """Whether a run directory holds anything of a run (an empty folder does not count)."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)
    return bool(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def run_location(out: str) -> tuple[str, str]:
    """Ray's (storage_path, name) for a run or experiment directory."""
    out = out.rstrip("/")
    if storage.is_remote(out):
        parent, name = out.rsplit("/", 1)
        return parent, name
    path = os.path.abspath(out)
    return os.path.dirname(path), os.path.basename(path)


def _export(cfg: TrainConfig, result, classes: list[str], norm: Normalisation,
            steps_per_epoch: int) -> TrainResult:
    """The best checkpoint by lwlrap becomes <run>/model; history and metrics beside it."""
    if result.error is not None:
        raise result.error
    with result.checkpoint.as_directory() as folder:
        history = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu",
                             weights_only=False)["history"]
    best_checkpoint, best = max(result.best_checkpoints, key=lambda pair: pair[1]["lwlrap"])
    with best_checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu",
                           weights_only=False)
    metrics = {"best_epoch": int(best["epoch"]), "lwlrap": float(best["lwlrap"]),
               "valid_loss": float(best["valid_loss"]), "epochs": cfg.epochs,
               "fold": f"{cfg.fold}/{cfg.n_folds}", "steps_per_epoch": steps_per_epoch,
               "config": _config_dict(cfg)}
    meta = ModelMeta(arch=cfg.arch, classes=classes, mel=cfg.mel, crop_frames=cfg.crop_frames,
                     normalisation=norm, recipe=cfg.recipe, metrics=metrics)
    artifact = storage.join(cfg.out, "model")
    save_artifact(artifact, meta, state["model"])
    storage.write_json(storage.join(cfg.out, "metrics.json"), metrics)
    storage.write_bytes(storage.join(cfg.out, "history.csv"), _history_csv(history))
    return TrainResult(out=cfg.out, artifact=artifact, best_epoch=metrics["best_epoch"],
                       best_lwlrap=metrics["lwlrap"], history=history)


def _config_dict(cfg: TrainConfig) -> dict:
    """The run's settings, JSON-ready (the mel config is in the artifact already)."""
    d = asdict(replace(cfg, fail_after_epoch=None, resume=False))
    d.pop("mel")
    return json.loads(json.dumps(d))


def _history_csv(history: list[dict]) -> bytes:
    """history.csv: one row per epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch", "train_loss", "valid_loss", "lwlrap",
                                             "time", "lr"])
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue().encode()
