"""A training run on storage: per-epoch checkpoints (save / restore), the fault drill, and the
export of the best checkpoint as the model artifact with metrics and history."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import ray.train
import torch

# Where Ray Train's controller records the checkpoints it has registered (what a resume sees);
# Ray's own name, so a rename in Ray fails at import instead of stalling the fault drill.
from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME as REGISTERED

from fatlib.core.averaging import WeightAverage
from fatlib.core.errors import first_line, redact
from fatlib.core.frontend import Normalisation
from fatlib.io import storage
from fatlib.io.artifact import ModelMeta, save_artifact
from fatlib.stages.train.config import RunDirError, TrainConfig, TrainResult

STATE_FILE = "state.pt"
DRILL_MARKER = ".fault-drill-done"
CHECKPOINT_PREFIX = "checkpoint_"
STAGING_PREFIX = "fatlib-ckpt-"  # + pid and process space: a checkpoint before Ray copies it
# What torch.load raises on a truncated or corrupted state.pt (a full disk, a killed copy).
_UNREADABLE = (OSError, RuntimeError, EOFError, pickle.UnpicklingError)
OOF = "oof.parquet"  # the best epoch's validation scores: out-of-fold scores of a K-fold run
HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "lwlrap", "time", "lr"]


def run_location(out: str) -> tuple[str, str]:
    """Ray's (storage_path, name) for a run or experiment directory."""
    out = out.rstrip("/")
    if storage.is_remote(out):
        parent, name = out.rsplit("/", 1)
        return parent, name
    path = os.path.abspath(out)
    return os.path.dirname(path), os.path.basename(path)


def restore(model, optimizer, scheduler, average: WeightAverage | None = None
            ) -> tuple[int, list[dict]]:
    """Continue from the latest checkpoint that loads when Ray Train hands one over (restart or
    resume): the epochs done and their history ((0, []) for a fresh run)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    # Ray hands over the latest checkpoint it registered; one that does not load (corrupted,
    # truncated) gives way to the newest older one that does, as the driver checked.
    run_path, latest = checkpoint.path.rstrip("/").rsplit("/", 1)
    state, note = newest_readable(checkpoint.filesystem, run_path, latest)
    if state is None:
        raise RunDirError(note)
    if note and ray.train.get_context().get_world_rank() == 0:
        print(note, flush=True)
    # With a weight average, "model" holds the average (what was validated and is exported) and
    # "trained" the network the optimizer moves.
    unwrap(model).load_state_dict(state.get("trained", state["model"]))
    if average is not None:  # a run that averages now but did not before starts afresh
        average.load_state_dict(state if "trained" in state else
                                {"model": unwrap(model).state_dict(), "updates": 0})
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["history"]


def report_epoch(rank: int, model, optimizer, scheduler, history: list[dict],
                 metrics: dict, valid: dict, average: WeightAverage | None = None) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint of this epoch, with the
    validation fold's scores (valid: fname, scores) that become the run's out-of-fold scores.

    With a weight average, the average is the checkpoint's model (the network that was
    validated, and the one exported) and the trained network is kept beside it for resuming.
    """
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": metrics["epoch"],
             "history": history, "valid": valid}
    if average is not None:
        state |= {"trained": state["model"], **average.state_dict()}  # its model and updates
    remove_orphan_staging()
    with tempfile.TemporaryDirectory(prefix=staging_prefix()) as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        except OSError as e:  # its copy to the run directory failed: a full disk, no permission
            raise _checkpoint_not_written(metrics["epoch"], e) from None


def staging_prefix(pid: int | None = None) -> str:
    """The name prefix of a checkpoint staging folder saved by process pid (this one)."""
    return f"{STAGING_PREFIX}{os.getpid() if pid is None else pid}-{_process_space()}-"


def remove_orphan_staging(root: str | None = None) -> list[str]:
    """Remove the checkpoint staging folders under root (the temp dir) whose worker process is
    gone; returns them.

    A worker killed while Ray Train copies its checkpoint (a lost node, a preemption, the fault
    drill) leaves its folder behind, a whole state.pt (134 MB for ResNet-18): each save on the
    node clears those of dead workers, so they do not pile up in /tmp. Only this process
    space's are judged: in a /tmp shared with other containers, their pids mean nothing here."""
    root = root or tempfile.gettempdir()
    removed = []
    for name in os.listdir(root):
        pid, space, _ = (name[len(STAGING_PREFIX):].split("-", 2) + ["", ""])[:3]
        # A pid of another user's live process counts as alive (psutil: EPERM = exists).
        if not (name.startswith(STAGING_PREFIX) and pid.isdigit() and space == _process_space()
                and not psutil.pid_exists(int(pid))):
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    return removed


@functools.cache
def _process_space() -> str:
    """A short tag of the pid namespace this process lives in: its host and, on Linux, the
    namespace's inode, so containers on one host that share /tmp tell their pids apart."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux, or no /proc: the host alone
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:8]


def _checkpoint_not_written(epoch: int, error: OSError) -> storage.StorageError:
    """One line naming the run directory and why epoch's checkpoint could not be written, once
    what its copy left there is removed (a half-written checkpoint no resume may pick: Ray Train
    registers a checkpoint only once it is copied whole)."""
    run = ray.train.get_context().get_storage()
    fs, path = run.storage_filesystem, run.experiment_fs_path
    latest = latest_registered(fs, path).get("checkpoint_dir_name")
    for name in checkpoint_dirs(fs, path):
        if latest is None or name > latest:  # Ray names them by time: newer than the latest
            with contextlib.suppress(OSError):  # the line below still says what failed
                fs.delete_dir(f"{path}/{name}")
    reason = (os.strerror(error.errno) if error.errno
              else f"{type(error).__name__}: {first_line(str(error), 120)}")
    return storage.StorageError(redact(f"{path}: cannot write the checkpoint of epoch {epoch} "
                                       f"({reason}); nothing half-written is left"))


def maybe_fail(cfg: TrainConfig, epoch: int, rank: int, world: int) -> None:
    """Fault drill: the last worker dies once, after the given epoch's checkpoint."""
    if cfg.fail_after_epoch is None or epoch + 1 != cfg.fail_after_epoch:
        return
    marker = storage.join(cfg.out, DRILL_MARKER)
    if rank == world - 1 and not storage.exists(marker):
        # The controller registers a reported checkpoint asynchronously: a worker that dies
        # before then loses it, and the run restarts an epoch earlier (or from scratch), which
        # is not the drill "crash after this epoch's checkpoint".
        _await_registered(cfg.out, epoch + 1)
        storage.write_bytes(marker, b"1")
        os._exit(1)  # a hard crash, as a lost node looks to Ray Train


def latest_registered(fs: pafs.FileSystem, run_path: str) -> dict:
    """Ray Train's record of the run's latest registered checkpoint (checkpoint_dir_name,
    metrics); {} when it has registered none."""
    try:
        with fs.open_input_stream(f"{run_path}/{REGISTERED}") as f:
            return json.loads(f.read()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return {}


def _await_registered(out: str, epoch: int, timeout: float = 60.0) -> None:
    """Wait until Ray Train has registered the checkpoint of this epoch of the run in out."""
    (fs, path), deadline = storage.resolve(out), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if latest_registered(fs, path).get("metrics", {}).get("epoch", 0) >= epoch:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fault drill: Ray Train did not register epoch {epoch}'s checkpoint "
                       f"in {out} within {timeout:.0f} s")


def export(cfg: TrainConfig, result, classes: list[str], norm: Normalisation,
           steps_per_epoch: int) -> TrainResult:
    """The best checkpoint by lwlrap becomes <run>/model; history and metrics beside it."""
    if result.error is not None:
        raise result.error
    history = _load_state(result.checkpoint)["history"]
    state, best = _best_readable(result.best_checkpoints)
    metrics = {"best_epoch": int(best["epoch"]), "lwlrap": float(best["lwlrap"]),
               "valid_loss": float(best["valid_loss"]), "epochs": cfg.epochs,
               "fold": f"{cfg.fold}/{cfg.n_folds}", "steps_per_epoch": steps_per_epoch,
               "config": config_dict(cfg)}
    meta = ModelMeta(arch=cfg.arch, classes=classes, mel=cfg.mel, crop_frames=cfg.crop_frames,
                     normalisation=norm, recipe=cfg.recipe, metrics=metrics)
    artifact = storage.join(cfg.out, "model")
    save_artifact(artifact, meta, state["model"])
    storage.write_json(storage.join(cfg.out, "metrics.json"), metrics)
    storage.write_bytes(storage.join(cfg.out, "history.csv"), _history_csv(history))
    _write_oof(cfg.out, state["valid"], classes)
    return TrainResult(out=cfg.out, artifact=artifact, best_epoch=metrics["best_epoch"],
                       best_lwlrap=metrics["lwlrap"], history=history)


def newest_readable(fs: pafs.FileSystem, run_path: str, latest: str
                    ) -> tuple[dict | None, str]:
    """(state, note) of the newest checkpoint of the run that loads, from checkpoint_* dir
    latest back through the older ones: note is '' when latest loads, else one line naming
    what was skipped and what is used; (None, why) when none loads."""
    older = sorted((n for n in checkpoint_dirs(fs, run_path) if n < latest), reverse=True)
    skipped = []
    for name in [latest, *older]:
        try:
            state = _load_state(ray.train.Checkpoint(f"{run_path}/{name}", filesystem=fs))
        except _UNREADABLE as e:
            skipped.append(f"{name} ({type(e).__name__}: {first_line(str(e), 120)})")
            continue
        note = (f"{run_path}: skipped unreadable checkpoint {', '.join(skipped)}; continuing "
                f"from {name} (epoch {state['epoch']})") if skipped else ""
        return state, note
    return None, (f"{run_path}: no checkpoint loads ({', '.join(skipped)}); start a new run "
                  "in another --out")


def read_oof(run: str) -> pd.DataFrame:
    """A run's out-of-fold scores: its best epoch's validation scores, fname + one column per
    class (vocabulary order)."""
    return storage.read_parquet(storage.join(run, OOF)).to_pandas()


def _write_oof(run: str, valid: dict, classes: list[str]) -> None:
    """<run>/oof.parquet from the best checkpoint's validation scores."""
    frame = pd.DataFrame(np.asarray(valid["scores"], dtype=np.float32), columns=classes)
    frame.insert(0, "fname", list(valid["fname"]))
    frame = frame.sort_values("fname", ignore_index=True)
    storage.write_parquet(storage.join(run, OOF), pa.Table.from_pandas(frame, preserve_index=False))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def _load_state(checkpoint: ray.train.Checkpoint) -> dict:
    """The state dict saved in a checkpoint (model, optimizer, scheduler, epoch, history)."""
    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu",
                          weights_only=False)


def _best_readable(best_checkpoints: list) -> tuple[dict, dict]:
    """(state, metrics) of the best checkpoint by lwlrap that loads (one a resume skipped as
    unreadable may still rank first)."""
    ranked = sorted(best_checkpoints, key=lambda pair: pair[1]["lwlrap"], reverse=True)
    for checkpoint, metrics in ranked:
        try:
            return _load_state(checkpoint), metrics
        except _UNREADABLE:
            continue
    raise RuntimeError(f"none of the run's {len(ranked)} best checkpoints loads")


def checkpoint_dirs(fs: pafs.FileSystem, run_path: str) -> list[str]:
    """Names of the checkpoint_* directories of a run directory (Ray names them by time)."""
    infos = fs.get_file_info(pafs.FileSelector(run_path, allow_not_found=True))
    return [i.base_name for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX)]


def config_dict(cfg: TrainConfig) -> dict:
    """The run's settings, JSON-ready (the mel config is in the artifact already)."""
    d = asdict(replace(cfg, fail_after_epoch=None, resume=False,
                       noisy_smoothing=cfg.smoothing))
    d.pop("mel")
    return json.loads(json.dumps(d))


def _history_csv(history: list[dict]) -> bytes:
    """history.csv: one row per epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue().encode()
