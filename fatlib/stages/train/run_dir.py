"""A training run's directory before Ray starts: whether it holds a run, what a failed first run
left, the settings --resume may not change, and whether a resume has a checkpoint that loads."""

from __future__ import annotations

import sys

import pyarrow.fs as pafs
from ray.train.v2._internal.constants import VALIDATE_STORAGE_MARKER_FILENAME

from fatlib.io import storage
from fatlib.io.artifact import META
from fatlib.stages.train.checkpoints import (
    CHECKPOINT_PREFIX,
    DRILL_MARKER,
    REGISTERED,
    STATE_FILE,
    checkpoint_dirs,
    config_dict,
    latest_registered,
    newest_readable,
)
from fatlib.stages.train.config import RunDirError, TrainConfig

RUN_CONFIG = "run_config.json"  # the run's settings, written as it starts: what --resume keeps

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

def open_run_dir(cfg: TrainConfig) -> None:
    """Fit --out to the request before Ray starts: a new run needs a directory without a run
    (what a run that ended before its first checkpoint left is replaced) and records its
    settings there; --resume needs a run whose recorded settings match and a checkpoint that
    loads. cfg: with the recipe decided (TrainConfig.with_recipe)."""
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
    storage.write_json(storage.join(cfg.out, RUN_CONFIG), config_dict(cfg))


def has_run(uri: str) -> bool:
    """Whether a run directory holds a run: a checkpoint or an exported model. What a run
    that failed before its first checkpoint left (a bad store, a crash in epoch 1, Ctrl-C),
    a job's lock or anything else does not count, so a new run may take its place."""
    if storage.is_file(storage.join(uri, "model", META)):
        return True
    fs, path = storage.resolve(uri)
    return any(fs.get_file_info(f"{path}/{name}/{STATE_FILE}").type == pafs.FileType.File
               for name in checkpoint_dirs(fs, path))



def changed_settings(cfg: TrainConfig) -> list[str] | None:
    """The settings that change what is trained where cfg differs from the run recorded in
    cfg.out, as flags (old -> new); None when the run recorded none (an older fatlib)."""
    where = storage.join(cfg.out, RUN_CONFIG)
    if not storage.is_file(where):
        return None
    now, recorded = _comparable(config_dict(cfg)), _comparable(storage.read_json(where))
    return [f"--{k.replace('_', '-')} {_shown(recorded[k])} -> {_shown(now[k])}"
            + (_SCHEDULE.format(epochs=recorded[k]) if k == "epochs" else "")
            for k in now if k in recorded and recorded[k] != now[k]]


def _check_resumed_settings(cfg: TrainConfig) -> None:
    """RunDirError naming each setting --resume would change, of those that change what is
    trained, as the run recorded it (old -> new)."""
    changed = changed_settings(cfg)
    if changed is None:
        raise RunDirError(f"{cfg.out}: a run from an older fatlib (no {RUN_CONFIG}), no longer "
                          "resumed; start a new run in another --out")
    if changed:
        raise RunDirError(f"{cfg.out}: --resume cannot change {', '.join(changed)}; resume "
                          "with the run's settings or choose another --out")


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
    fs, path = storage.resolve(out)
    latest = latest_registered(fs, path).get("checkpoint_dir_name")
    if latest is None:  # nothing registered: Ray Train starts the run afresh
        return
    state, note = newest_readable(fs, path, latest)
    if state is None:
        raise RunDirError(note)
    if "valid" not in state:  # the out-of-fold scores export writes
        raise RunDirError(f"{out}: its checkpoints are from an older fatlib (no validation "
                          "scores), no longer resumed; start a new run in another --out")


def _clear_unfinished(out: str) -> None:
    """Remove what a run that ended before its first checkpoint left in out, its own files and
    Ray Train's only (never anything else there), and say so in one line."""
    fs, path = storage.resolve(out)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    leftovers = [i for i in infos if i.base_name in _LEFTOVER_FILES or (
        i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX))]
    for info in leftovers:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
    if leftovers:
        print(f"{out}: replacing an unfinished run (it ended before its first checkpoint)",
              file=sys.stderr, flush=True)
