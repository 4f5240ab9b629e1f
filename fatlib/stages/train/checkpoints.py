"""A training run on storage: its directory, per-epoch checkpoints (save / restore), the fault
drill, and the export of the best checkpoint as the model artifact with metrics and history."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import sys
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import ray.train
import torch

# Where Ray Train's controller records the checkpoints it has registered (what a resume sees);
# Ray's own name, so a rename in Ray fails at import instead of stalling the fault drill.
from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME as REGISTERED
from ray.train.v2._internal.constants import VALIDATE_STORAGE_MARKER_FILENAME

from fatlib.core.averaging import WeightAverage
from fatlib.core.errors import redact
from fatlib.core.inputs import Normalisation
from fatlib.io import storage
from fatlib.io.artifact import META, ModelMeta, save_artifact
from fatlib.stages.train.config import RunDirError, TrainConfig, TrainResult

STATE_FILE = "state.pt"
RUN_CONFIG = "run_config.json"  # the run's settings, written as it starts: what --resume keeps
DRILL_MARKER = ".fault-drill-done"
_CHECKPOINT_PREFIX = "checkpoint_"
# What a run that ended before its first checkpoint leaves (besides checkpoint_* dirs without a
# state): fatlib's files and Ray Train's own, replaced by the next run into the same --out.
_LEFTOVER_FILES = frozenset({RUN_CONFIG, REGISTERED, VALIDATE_STORAGE_MARKER_FILENAME,
                             DRILL_MARKER})
# Settings --resume may change: where and how the run executes (the directory may have moved),
# not what it trains - the network, its inputs, the data and folds, the schedule, the seed.
# Workers may change, so a run continues on a cluster that lost or gained nodes; the one-cycle
# schedule then keeps the step count it started with, so it ends slightly before or after the
# last epoch.
RESUMABLE = frozenset({"out", "workers", "gpus_per_worker", "cpus_per_worker",
                       "wait_for_resources", "max_failures", "keep_checkpoints", "resume",
                       "fail_after_epoch"})
# Why --epochs cannot change on --resume: a restored one-cycle scheduler keeps its length.
_SCHEDULE = (" (the one-cycle LR schedule was laid out over {epochs} epochs and ends at epoch "
             "{epochs}: training longer or shorter needs a new --out)")
# What torch.load raises on a truncated or corrupted state.pt (a full disk, a killed copy).
_UNREADABLE = (OSError, RuntimeError, EOFError, pickle.UnpicklingError)
OOF = "oof.parquet"  # the best epoch's validation scores: out-of-fold scores of a K-fold run
HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "lwlrap", "time", "lr"]


def open_run_dir(cfg: TrainConfig) -> None:
    """Fit --out to the request before Ray starts: a new run needs a directory without a run
    (what a run that ended before its first checkpoint left is replaced) and records its
    settings there; --resume needs a run whose recorded settings match and a checkpoint that
    loads. cfg: with --noisy decided (TrainConfig.with_noisy)."""
    if has_run(cfg.out):
        if not cfg.resume:
            raise RunDirError(f"{cfg.out} already holds a run; pass --resume to continue it "
                              "or choose another --out")
        _check_resumed_settings(cfg)
        _check_restorable(cfg.out)
        return
    if cfg.resume:
        raise RunDirError(f"{cfg.out}: no run to resume (no checkpoint or model there); "
                          "run again without --resume")
    _clear_unfinished(cfg.out)
    storage.write_json(storage.join(cfg.out, RUN_CONFIG), _config_dict(cfg))


def has_run(uri: str) -> bool:
    """Whether a run directory holds a run: a checkpoint or an exported model. What a run
    that failed before its first checkpoint left (a bad store, a crash in epoch 1, Ctrl-C),
    a job's lock or anything else does not count, so a new run may take its place."""
    if storage.is_file(storage.join(uri, "model", META)):
        return True
    fs, path = storage.resolve(uri)
    return any(fs.get_file_info(f"{path}/{name}/{STATE_FILE}").type == pafs.FileType.File
               for name in _checkpoint_dirs(fs, path))


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
    with tempfile.TemporaryDirectory(prefix="fatlib-ckpt-") as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        except OSError as e:  # its copy to the run directory failed: a full disk, no permission
            raise _checkpoint_not_written(metrics["epoch"], e) from None


def _checkpoint_not_written(epoch: int, error: OSError) -> storage.StorageError:
    """One line naming the run directory and why epoch's checkpoint could not be written, once
    what its copy left there is removed (a half-written checkpoint no resume may pick: Ray Train
    registers a checkpoint only once it is copied whole)."""
    run = ray.train.get_context().get_storage()
    fs, path = run.storage_filesystem, run.experiment_fs_path
    try:
        registered = json.loads(fs.open_input_stream(f"{path}/{REGISTERED}").read())
        latest = (registered.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    except (OSError, ValueError):  # nothing registered yet
        latest = None
    for name in _checkpoint_dirs(fs, path):
        if latest is None or name > latest:  # Ray names them by time: newer than the latest
            with contextlib.suppress(OSError):  # the line below still says what failed
                fs.delete_dir(f"{path}/{name}")
    reason = os.strerror(error.errno) if error.errno else _first_line(error)
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


def _await_registered(out: str, epoch: int, timeout: float = 60.0) -> None:
    """Wait until Ray Train has registered the checkpoint of this epoch of the run in out."""
    snapshot, deadline = storage.join(out, REGISTERED), time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            latest = storage.read_json(snapshot).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):  # not written yet, or caught mid-write
            latest = {}
        if latest.get("metrics", {}).get("epoch", 0) >= epoch:
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
               "config": _config_dict(cfg)}
    meta = ModelMeta(arch=cfg.arch, classes=classes, mel=cfg.mel, crop_frames=cfg.crop_frames,
                     normalisation=norm, recipe=cfg.recipe, metrics=metrics)
    artifact = storage.join(cfg.out, "model")
    save_artifact(artifact, meta, state["model"])
    storage.write_json(storage.join(cfg.out, "metrics.json"), metrics)
    storage.write_bytes(storage.join(cfg.out, "history.csv"), _history_csv(history))
    if state.get("valid") is not None:  # checkpoints written before fatlib kept them lack it
        _write_oof(cfg.out, state["valid"], classes)
    return TrainResult(out=cfg.out, artifact=artifact, best_epoch=metrics["best_epoch"],
                       best_lwlrap=metrics["lwlrap"], history=history)


def newest_readable(fs: pafs.FileSystem, run_path: str, latest: str
                    ) -> tuple[dict | None, str]:
    """(state, note) of the newest checkpoint of the run that loads, from checkpoint_* dir
    latest back through the older ones: note is '' when latest loads, else one line naming
    what was skipped and what is used; (None, why) when none loads."""
    older = sorted((n for n in _checkpoint_dirs(fs, run_path) if n < latest), reverse=True)
    skipped = []
    for name in [latest, *older]:
        try:
            state = _load_state(ray.train.Checkpoint(f"{run_path}/{name}", filesystem=fs))
        except _UNREADABLE as e:
            skipped.append(f"{name} ({_first_line(e)})")
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


def _check_resumed_settings(cfg: TrainConfig) -> None:
    """RunDirError naming each setting --resume would change, of those that change what is
    trained, as the run recorded it (old -> new)."""
    recorded = _recorded_config(cfg.out)
    if recorded is None:  # a run from before fatlib recorded its settings
        return
    now, recorded = _comparable(_config_dict(cfg)), _comparable(recorded)
    changed = [f"--{k.replace('_', '-')} {_shown(recorded[k])} -> {_shown(now[k])}"
               + (_SCHEDULE.format(epochs=recorded[k]) if k == "epochs" else "")
               for k in now if k in recorded and recorded[k] != now[k]]
    if changed:
        raise RunDirError(f"{cfg.out}: --resume cannot change {', '.join(changed)}; resume "
                          "with the run's settings or choose another --out")


def _recorded_config(out: str) -> dict | None:
    """The settings a run recorded as it started (a finished run's metrics.json has them
    too), or None."""
    for name, key in ((RUN_CONFIG, None), ("metrics.json", "config")):
        uri = storage.join(out, name)
        if storage.is_file(uri):
            doc = storage.read_json(uri)
            return doc if key is None else doc.get(key)
    return None


def _comparable(config: dict) -> dict:
    """A run's settings without those a resumed run may change; --fold as k/K."""
    d = {k: v for k, v in config.items() if k not in RESUMABLE}
    if "fold" in d and "n_folds" in d:
        d["fold"] = f"{d['fold']}/{d.pop('n_folds')}"
    return d


def _shown(value) -> str:
    """A recorded setting as its flag's value reads."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return "(default)" if value is None else str(value)


def _check_restorable(out: str) -> None:
    """RunDirError when none of the checkpoints a resume may start from loads: each worker
    would fail on it, max_failures times (the workers skip unreadable ones themselves)."""
    snapshot = storage.join(out, REGISTERED)
    if not storage.is_file(snapshot):
        return
    latest = (storage.read_json(snapshot).get("latest_checkpoint_result") or {}).get(
        "checkpoint_dir_name")
    if latest is None:  # nothing registered: Ray Train starts the run afresh
        return
    fs, path = storage.resolve(out)
    state, note = newest_readable(fs, path, latest)
    if state is None:
        raise RunDirError(note)


def _clear_unfinished(out: str) -> None:
    """Remove what a run that ended before its first checkpoint left in out, its own files and
    Ray Train's only (never anything else there), and say so in one line."""
    fs, path = storage.resolve(out)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    leftovers = [i for i in infos if i.base_name in _LEFTOVER_FILES or (
        i.type == pafs.FileType.Directory and i.base_name.startswith(_CHECKPOINT_PREFIX))]
    for info in leftovers:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
    if leftovers:
        print(f"{out}: replacing an unfinished run (it ended before its first checkpoint)",
              file=sys.stderr, flush=True)


def _checkpoint_dirs(fs: pafs.FileSystem, run_path: str) -> list[str]:
    """Names of the checkpoint_* directories of a run directory (Ray names them by time)."""
    infos = fs.get_file_info(pafs.FileSelector(run_path, allow_not_found=True))
    return [i.base_name for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(_CHECKPOINT_PREFIX)]


def _first_line(error: Exception) -> str:
    """An exception as a short phrase: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120]}" if text else type(error).__name__


def _config_dict(cfg: TrainConfig) -> dict:
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
