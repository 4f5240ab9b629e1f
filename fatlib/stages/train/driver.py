"""The training driver: validate the store, split the folds, start Ray Train's DDP workers on
Ray Data shards, export the best checkpoint by lwlrap as <run>/model (with <run>/metrics.json
and <run>/history.csv beside it)."""

from __future__ import annotations

from dataclasses import replace

import ray.train
from ray.train.torch import TorchTrainer

from fatlib.core.errors import UserError
from fatlib.io import storage
from fatlib.io.feature_store import FeatureStore
from fatlib.io.locks import holding
from fatlib.stages.runtime import (
    cluster_cpus,
    ensure_ray,
    interruptible,
    require_resources,
    shared_cpus,
)
from fatlib.stages.train.checkpoints import export, run_location
from fatlib.stages.train.config import TrainConfig, TrainResult, steps_per_epoch
from fatlib.stages.train.datasets import training_datasets
from fatlib.stages.train.inputs import input_spec, training_inputs
from fatlib.stages.train.loop import WorkerInputs, train_loop_per_worker
from fatlib.stages.train.rendezvous import NodeBoundTorchConfig
from fatlib.stages.train.run_dir import open_run_dir


@holding("train")  # its run dir, before anything is read or written
def train(cfg: TrainConfig, callbacks: tuple = ()) -> TrainResult:
    """Train on the feature store's curated fold (plus its noisy clips with --noisy), export the
    best model.

    callbacks: extra Ray Train callbacks (Tune passes its report callback here).
    """
    cfg = replace(cfg, features=storage.absolute(cfg.features), out=storage.absolute(cfg.out))
    cfg.check()
    store = FeatureStore.open(cfg.features, cfg.mel)  # read once, before the run dir is touched
    cfg = cfg.with_recipe(store.has("train_noisy"))
    open_run_dir(cfg)  # with the recipe decided: what the run records, and --resume compares
    inputs = training_inputs(cfg, store)
    ensure_ray()
    cpus = cfg.cpus_per_worker or worker_cpus(cfg.workers)
    gpus = {"GPU": cfg.gpus_per_worker} if cfg.gpus_per_worker > 0 else {}
    require_resources([{"CPU": cpus, **gpus}] * cfg.workers,
                      f"training ({cfg.workers} workers)", cfg.wait_for_resources)
    datasets = training_datasets(cfg, store, inputs.valid_names)
    n_train = datasets["train"].count()
    worker_inputs = WorkerInputs(cfg=cfg, classes=inputs.classes,
                                 spec=input_spec(cfg, inputs.norm), n_train=n_train,
                                 threads=max(1, int(cpus)),
                                 n_noisy=datasets["noisy"].count() if "noisy" in datasets else 0)
    storage_path, name = run_location(cfg.out)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"inputs": worker_inputs},
        torch_config=NodeBoundTorchConfig(),  # DDP listens on the Ray node address only
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers,
                                               use_gpu=cfg.gpus_per_worker > 0,
                                               resources_per_worker={"CPU": cpus, **gpus}),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute="lwlrap",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            # A user error in a worker ends the run at once: a retry fails the same way.
            callbacks=[StopOnUserError(), *callbacks],
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            datasets_to_split=[name for name in datasets if name != "valid"]),
    )
    result = interruptible(trainer.fit)
    return export(cfg, result, inputs.classes, inputs.norm,
                  steps_per_epoch(n_train, cfg.batch_size, cfg.workers))


def worker_cpus(workers: int) -> float:
    """Default CPUs of a training worker: whole CPUs shared out, or a fraction of one each when
    there are more workers than CPUs."""
    cpus = cluster_cpus()
    return float(cpus // workers) if cpus >= workers else shared_cpus(1, workers)


class StopOnUserError(ray.train.UserCallback):
    """Ends a training run at once when a worker raises a UserError (bad data, a setting the
    driver could not check): Ray Train retries any worker failure up to --max-failures times,
    and a retry would fail the same way. Raised in Ray Train's controller, the error ends the
    run there (a controller failure is not retried) and fit() raises it inside a
    ControllerError, which the job's console unwraps to its one line."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        """Raise the first user error among the workers' failures."""
        for _, error in sorted(worker_exceptions.items()):
            if isinstance(error, UserError):
                raise error
