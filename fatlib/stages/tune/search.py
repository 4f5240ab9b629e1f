"""The Ray Tune search: each trial is `fatlib.stages.train.driver.train` itself, run inside a
function trainable (Ray 2.60's Train V2 + Tune pattern), so the best trial is reproduced by the
train.py command line that best.json records. ASHA stops weak trials early; a killed experiment
resumes without re-running finished trials.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import replace

import pandas as pd
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from fatlib.io import storage
from fatlib.io.locks import holding
from fatlib.stages.runtime import (
    ResourceError,
    cluster_cpus,
    ensure_ray,
    require_resources,
    shared_cpus,
)
from fatlib.stages.train.checkpoints import run_location
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.train.driver import train
from fatlib.stages.train.inputs import training_inputs
from fatlib.stages.train.run_dir import has_run
from fatlib.stages.tune.config import (
    SEARCH,
    SEARCHED,
    TuneResult,
    TuneSettings,
    train_command,
    trial_config,
)


@holding("tune")  # the experiment dir; each trial's train() holds its own run dir
def tune_training(settings: TuneSettings) -> TuneResult:
    """Run (or resume) the search and write best.json, results.csv and lwlrap_vs_lr.png."""
    # Every mistake in the flags or the store is one line here, before Ray starts or anything
    # is written: in Ray it would fail every trial, or Tune itself after it saved its state.
    settings.check()
    base = replace(settings.base, features=storage.absolute(settings.base.features))
    settings = replace(settings, out=storage.absolute(settings.out), base=base)
    training_inputs(base)
    ensure_ray()
    if base.cpus_per_worker is None:
        base = replace(base, cpus_per_worker=_trial_cpus(settings))
        settings = replace(settings, base=base)
    gpus = {"GPU": base.gpus_per_worker} if base.gpus_per_worker > 0 else {}
    require_resources([{"CPU": base.cpus_per_worker, **gpus}] * base.workers,
                      f"a tuning trial ({base.workers} workers)", base.wait_for_resources)
    storage_path, name = run_location(settings.out)
    experiment = storage.join(storage_path, name)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=settings.base, experiment=experiment),
        {"cpu": 0.01},  # the trial's driver only waits; its Train workers hold the resources
    )
    if _resumable(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_search_space(settings),
            tune_config=tune.TuneConfig(
                metric="lwlrap",
                mode="max",
                num_samples=settings.samples,
                # Rungs by epoch, not by reports received: a trial resumed from its
                # checkpoint replays its finished epochs and carries on from there.
                scheduler=tune.schedulers.ASHAScheduler(
                    time_attr="epoch", max_t=settings.base.epochs,
                    grace_period=settings.grace_epochs, reduction_factor=2),
                # The limit lives on the generator: Tune ignores max_concurrent_trials (with a
                # warning) when it is handed a BasicVariantGenerator, and ran all trials at once.
                search_alg=tune.search.BasicVariantGenerator(
                    random_state=settings.seed, max_concurrent=settings.max_concurrent),
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path),
        )
    grid = tuner.fit()
    trials = _trials_table(grid)
    if trials.empty:
        raise RuntimeError(f"no trial reported a result; first error: {_first_error(grid)}")
    best = trials.iloc[0].to_dict()
    best_run = trial_config(replace(settings.base, out=storage.join(settings.out, "best-run")),
                            best)
    best_cfg = {k: getattr(best_run, k) for k in SEARCHED}
    command = train_command(best_run)
    storage.write_json(storage.join(settings.out, "best.json"),
                       {"lwlrap": float(best["lwlrap"]), "config": best_cfg,
                        "epochs_run": int(best["epoch"]), "trial_id": best["trial_id"],
                        "command": command})
    storage.write_bytes(storage.join(settings.out, "results.csv"),
                        trials.to_csv(index=False).encode())
    return TuneResult(best_cfg, float(best["lwlrap"]), command, trials, settings.out)


def _trial_cpus(settings: TuneSettings) -> float:
    """CPUs per training worker when the trials that run at once share the cluster."""
    running = min(settings.max_concurrent, settings.samples)
    cpus = shared_cpus(running, settings.base.workers)
    if cpus < 0.01:
        raise ResourceError(f"--max-concurrent {running} x --workers {settings.base.workers} "
                            f"leaves under 0.01 CPU per training worker on {cluster_cpus()} "
                            "CPUs; run fewer trials at once or pass --cpus-per-worker")
    return cpus


# What Tune itself writes at the top of an experiment directory (Ray 2.60): the Tuner, the
# experiment's state, the sampler's state, a storage probe.
_TUNE_FILES = ("tuner.pkl", "experiment_state-*.json", "basic-variant-state-*.json",
               "search_gen_state-*.json", ".validate_storage_marker")


def _resumable(experiment: str) -> bool:
    """Whether the directory holds a search to continue: Tune's saved state with a trial that
    reported an epoch. A search that failed (or was killed) before any trial reported leaves
    only Tune's bookkeeping, with the flags of that attempt: it is removed, so this run starts
    afresh with its own flags instead of failing as that attempt did."""
    if not tune.Tuner.can_restore(experiment):
        return False
    trials = _saved_trials(experiment)
    # A trial's last result holds only its id until it reports; Tune numbers each report.
    if trials is None or any("training_iteration" in (meta.get("last_result") or {})
                             for _, meta in trials):
        return True  # progress to keep (or a state only Tune can judge): Tune restores it
    _remove_unstarted(experiment, {state.get("trial_id") or "" for state, _ in trials} - {""})
    return False


def _saved_trials(experiment: str) -> list[tuple[dict, dict]] | None:
    """(state, run metadata) of each trial in Tune's newest saved experiment state: [] when
    Tune saved none (it failed before its first save), None when it cannot be read."""
    states = [n for n in storage.list_files(experiment)
              if fnmatch.fnmatch(n, "experiment_state-*.json")]
    if not states:
        return []
    try:
        doc = storage.read_json(storage.join(experiment, max(states)))
        return [(json.loads(state), json.loads(meta)) for state, meta in doc["trial_data"]]
    except (ValueError, KeyError, TypeError):
        return None


def _remove_unstarted(experiment: str, trial_ids: set[str]) -> None:
    """Delete what a search that no trial reported in wrote: Tune's files, its trials'
    directories (named with the trial id) and their runs under trials/; nothing else."""
    for folder in storage.list_dirs(experiment):
        if any(f"_{trial_id}_" in f"_{folder}_" for trial_id in trial_ids):
            storage.remove_tree(storage.join(experiment, folder))
    for trial_id in trial_ids:
        storage.remove_tree(storage.join(experiment, "trials", trial_id))
    for name in storage.list_files(experiment):
        if any(fnmatch.fnmatch(name, pattern) for pattern in _TUNE_FILES):
            storage.remove(storage.join(experiment, name))


def _first_error(grid) -> str:
    """The first failed trial's error, as its last line says it."""
    errors = [str(e).strip().splitlines() for e in grid.errors]
    return next((lines[-1] for lines in errors if lines), "none (every trial stopped early)")


def _trial(config: dict, base: TrainConfig, experiment: str) -> None:
    """One trial: the training stage with the sampled settings, reporting each epoch to Tune."""
    trial_id = ray.tune.get_context().get_trial_id()
    out = storage.join(experiment, "trials", trial_id)
    cfg = replace(trial_config(base, config), out=out,
                  resume=has_run(out))  # a restored trial continues its own run
    train(cfg, callbacks=(TuneReportCallback(),))


def _search_space(settings: TuneSettings) -> dict:
    """Each searched field's Tune domain (LR log-uniform; crop, mixup and SpecAugment from
    their lists), in config.SEARCH's order."""
    return {s.field: tune.loguniform(*s.choices(settings)) if s.sampled == "log-uniform"
            else tune.choice(list(s.choices(settings))) for s in SEARCH}


def _trials_table(grid) -> pd.DataFrame:
    """One row per trial: its settings, best lwlrap and the epoch it came at, best first."""
    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or "lwlrap" not in frame:
            continue
        top = frame.loc[frame["lwlrap"].idxmax()]
        rows.append({"trial_id": result.metrics.get("trial_id", ""),
                     **{k: result.config[k] for k in SEARCHED},
                     "lwlrap": float(top["lwlrap"]), "epoch": int(top["epoch"]),
                     "epochs_run": int(frame["epoch"].max()),
                     "valid_loss": float(top["valid_loss"])})
    columns = ["trial_id", *SEARCHED, "lwlrap", "epoch", "epochs_run", "valid_loss"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values("lwlrap", ascending=False, ignore_index=True)
