"""K-fold cross-validation as one distributed job: every fold of the curated clips trains as
its own Ray Train run (concurrently, as far as the cluster's resources allow), each in
<out>/fold-<k>/ with its own model artifact; their out-of-fold scores give the lwlrap over every
curated clip, and <out>/ensemble.json lists the K artifacts for inference. A killed job, run
again, trains only the folds that did not finish."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import ray

from fatlib.core.labels import multi_hot
from fatlib.core.metrics import lwlrap
from fatlib.io import storage
from fatlib.io.artifact import ENSEMBLE, META
from fatlib.io.locks import holding
from fatlib.stages.runtime import cluster_gpus, ensure_ray, shared_cpus
from fatlib.stages.train.checkpoints import OOF, read_oof
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.driver import train
from fatlib.stages.train.inputs import training_inputs
from fatlib.stages.train.run_dir import changed_settings, has_run


@dataclass
class KFoldResult:
    """The folds' best validation lwlrap, the out-of-fold lwlrap, where the ensemble is."""

    out: str
    fold_lwlrap: list[float]
    oof_lwlrap: float
    n_clips: int
    trained: list[int]  # folds trained by this run (the others had finished before)
    ensemble: str

    def summary(self) -> str:
        """A line per fold, then the out-of-fold figure and the ensemble."""
        lines = [f"{'fold':>4}  {'lwlrap':>8}"]
        lines += [f"{k:>4}  {v:>8.4f}" + ("" if k in self.trained else "  (finished before)")
                  for k, v in enumerate(self.fold_lwlrap)]
        lines.append(f"out-of-fold lwlrap {self.oof_lwlrap:.4f} over {self.n_clips} curated clips; "
                     f"ensemble: {self.ensemble}")
        return "\n".join(lines)


def fold_dir(out: str, fold: int) -> str:
    """Where fold k's run lives."""
    return storage.join(out, f"fold-{fold}")


def is_fold_dir(name: str) -> bool:
    """Whether a directory's name is fold_dir's, of some fold."""
    return name.startswith("fold-") and name[len("fold-"):].isdigit()


@holding("train --folds all")  # the K-fold root; each fold's task holds its own fold-<k>
def train_folds(cfg: TrainConfig) -> KFoldResult:
    """Train the folds that have not finished, then score and list all K of them."""
    cfg = replace(cfg, features=storage.absolute(cfg.features), out=storage.absolute(cfg.out),
                  folds="one", fold=0)
    cfg.check()
    inputs = training_inputs(cfg)  # the store is checked once, before any fold starts
    ensure_ray()
    todo = [k for k in range(cfg.n_folds) if not _finished(fold_dir(cfg.out, k))]
    share = _fold_config(cfg)
    _require_finished_alike(share.with_recipe(inputs.store.has("train_noisy")), todo)
    # The fold tasks only wait on their Ray Train runs, and all K start at once: holding any CPU
    # (0.01 each) they took what the running fold's workers need (K = 5 on 2 CPUs hung).
    runs = [_train_fold.options(num_cpus=0).remote(
        replace(share, fold=k, out=fold_dir(cfg.out, k), resume=has_run(fold_dir(cfg.out, k))))
        for k in todo]
    ray.get(runs)
    return _ensemble(cfg, inputs.classes, inputs.curated, todo)


@ray.remote
def _train_fold(cfg: TrainConfig) -> None:
    """One fold's training stage, as a Ray task: the folds' Ray Train runs share the cluster."""
    train(cfg)


def _fold_config(cfg: TrainConfig) -> TrainConfig:
    """Each fold's settings: with no CPUs per worker given, the folds that can run at once (one
    per set of GPUs their workers need, else one) share the cluster's CPUs as Tune's trials do."""
    if cfg.cpus_per_worker is not None:
        return cfg
    gpus_per_fold = cfg.workers * cfg.gpus_per_worker
    at_once = max(1, min(cfg.n_folds, int(cluster_gpus() // gpus_per_fold))) if gpus_per_fold else 1
    return replace(cfg, cpus_per_worker=shared_cpus(at_once, cfg.workers))


def _require_finished_alike(cfg: TrainConfig, todo: list[int]) -> None:
    """RunDirError naming what differs when a re-run would train its folds with other settings
    than the folds that finished before: one ensemble, one recipe."""
    for k in sorted(set(range(cfg.n_folds)) - set(todo)):
        changed = changed_settings(replace(cfg, fold=k, out=fold_dir(cfg.out, k)))
        if changed:
            raise RunDirError(f"{fold_dir(cfg.out, k)} finished with other settings: "
                              f"{', '.join(changed)}; the folds of one run share their "
                              "settings: run again with that fold's, or choose another --out")


def _finished(run: str) -> bool:
    """Whether a fold's run exported its model and out-of-fold scores."""
    return storage.is_file(storage.join(run, "model", META)) and storage.is_file(
        storage.join(run, OOF))


def _ensemble(cfg: TrainConfig, classes: list[str], curated: dict,
              trained: list[int]) -> KFoldResult:
    """Out-of-fold lwlrap over every curated clip (each exactly once) and <out>/ensemble.json."""
    folds = [fold_dir(cfg.out, k) for k in range(cfg.n_folds)]
    metrics = [storage.read_json(storage.join(run, "metrics.json")) for run in folds]
    oof = pd.concat([read_oof(run) for run in folds], ignore_index=True)
    expected = sorted(curated["fname"])
    if sorted(oof.fname) != expected:  # each clip in exactly one fold's validation, or a bug
        raise RuntimeError(f"out-of-fold scores cover {len(oof)} rows, not the "
                           f"{len(expected)} curated clips once each")
    labels = dict(zip(curated["fname"], curated["labels"], strict=True))
    truth = multi_hot([labels[f] for f in oof.fname], classes, names=list(oof.fname))
    score = lwlrap(truth, oof[classes].to_numpy(np.float64))
    doc = {"n_folds": cfg.n_folds, "oof_lwlrap": score, "n_clips": len(oof),
           "models": [{"fold": k, "artifact": f"fold-{k}/model", "lwlrap": m["lwlrap"]}
                      for k, m in enumerate(metrics)]}
    uri = storage.join(cfg.out, ENSEMBLE)
    storage.write_json(uri, doc)
    return KFoldResult(out=cfg.out, fold_lwlrap=[m["lwlrap"] for m in metrics],
                       oof_lwlrap=score, n_clips=len(oof), trained=trained, ensemble=uri)
