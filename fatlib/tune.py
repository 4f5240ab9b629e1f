"""Tuning stage: Ray Tune searches LR / crop / mixup / SpecAugment against validation lwlrap.

Each trial is `fatlib.train.train` itself — the very stage behind jobs/train.py — run inside a
function trainable (Ray 2.60's Train V2 + Tune pattern), so the best trial is reproduced by the
train.py command line that best.json records. ASHA stops weak trials early; a killed experiment
resumes without re-running finished trials.
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, replace

import pandas as pd
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from fatlib import storage
from fatlib.runtime import cluster_cpus, ensure_ray
from fatlib.train import TrainConfig, has_run, run_location, train

SEARCHED = ("lr", "crop_frames", "mixup", "specaugment")


@dataclass(frozen=True)
class TuneSettings:
    """Inputs of the tuning stage: the search space, the budget and the fixed training flags."""

    base: TrainConfig  # features, workers, batch size, fold...: shared by every trial
    out: str  # experiment directory (local or s3://)
    samples: int = 8
    max_concurrent: int = 2
    gpus_per_trial: float = 0.0
    lr_min: float = 3e-4
    lr_max: float = 3e-2
    crops: tuple[int, ...] = (64, 128, 256)
    mixups: tuple[float, ...] = (0.0, 0.2, 0.4)
    specaugment: tuple[bool, ...] = (False, True)
    grace_epochs: int = 1  # ASHA: every trial runs at least this many epochs
    seed: int = 0


@dataclass
class TuneResult:
    """The search's outcome: best settings and score, the command that reproduces them."""

    best: dict
    best_lwlrap: float
    command: str
    trials: pd.DataFrame
    out: str

    def summary(self) -> str:
        """Lines for the job to print."""
        shown = ", ".join(f"{k}={self.best[k]}" for k in SEARCHED)
        return "\n".join([
            f"{len(self.trials)} trials; best lwlrap {self.best_lwlrap:.4f} with {shown}",
            f"results: {storage.join(self.out, 'results.csv')}, "
            f"{storage.join(self.out, 'lwlrap_vs_lr.png')}, {storage.join(self.out, 'best.json')}",
            f"TensorBoard: tensorboard --logdir {self.out}",
            "reproduce the best trial:",
            self.command,
        ])


def tune_training(settings: TuneSettings) -> TuneResult:
    """Run (or resume) the search and write best.json, results.csv and lwlrap_vs_lr.png."""
    ensure_ray()
    base = settings.base
    if base.cpus_per_worker is None:
        # Concurrent trials share the CPUs; each trial's driver holds 0.01 CPU, so whole-CPU
        # workers would never fit (2 CPUs - 0.01 < 2): take a little under an equal share.
        share = 0.98 * cluster_cpus() / (settings.max_concurrent * base.workers)
        base = replace(base, cpus_per_worker=round(share, 2))
    base = replace(base, features=storage.absolute(base.features), report=False)
    settings = replace(settings, out=storage.absolute(settings.out), base=base)
    settings.base.check()
    storage_path, name = run_location(settings.out)
    experiment = storage.join(storage_path, name)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=settings.base, gpus=settings.gpus_per_trial,
                             experiment=experiment),
        {"cpu": 0.01},  # the trial's driver only waits; its Train workers hold the resources
    )
    if tune.Tuner.can_restore(experiment):
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
        raise RuntimeError("no trial reported a result")
    best = trials.iloc[0].to_dict()
    best_cfg = {k: _plain(best[k]) for k in SEARCHED}
    command = train_command(replace(settings.base, **best_cfg,
                                    out=storage.join(settings.out, "best-run")))
    storage.write_json(storage.join(settings.out, "best.json"),
                       {"lwlrap": float(best["lwlrap"]), "config": best_cfg,
                        "epochs_run": int(best["epoch"]), "trial_id": best["trial_id"],
                        "command": command})
    storage.write_bytes(storage.join(settings.out, "results.csv"),
                        trials.to_csv(index=False).encode())
    _plot(trials, storage.join(settings.out, "lwlrap_vs_lr.png"))
    return TuneResult(best_cfg, float(best["lwlrap"]), command, trials, settings.out)


def train_command(cfg: TrainConfig) -> str:
    """The jobs/train.py command line that runs cfg."""
    default = TrainConfig(features="", out="")
    args = ["python", "jobs/train.py", "--features", cfg.features, "--out", cfg.out]
    flags = {"workers": "--workers", "gpus_per_worker": "--gpus-per-worker", "epochs": "--epochs",
             "lr": "--lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size",
             "crop_frames": "--crop-frames", "noisy": "--noisy", "noisy_weight": "--noisy-weight",
             "mixup": "--mixup", "arch": "--arch", "recipe": "--recipe",
             "normalisation": "--normalisation",
             "valid_crops": "--valid-crops", "seed": "--seed"}
    for field_name, flag in flags.items():
        value = getattr(cfg, field_name)
        if field_name in ("lr", "epochs", "crop_frames", "mixup") or value != getattr(default,
                                                                                    field_name):
            args += [flag, f"{value:.4g}" if isinstance(value, float) else str(value)]
    args += ["--fold", f"{cfg.fold}/{cfg.n_folds}"]
    args.append("--specaugment" if cfg.specaugment else "--no-specaugment")
    return shlex.join(args)


def _trial(config: dict, base: TrainConfig, gpus: float, experiment: str) -> None:
    """One trial: the training stage with the sampled settings, reporting each epoch to Tune."""
    trial_id = ray.tune.get_context().get_trial_id()
    out = storage.join(experiment, "trials", trial_id)
    cfg = replace(base, out=out, gpus_per_worker=gpus, lr=float(config["lr"]),
                  crop_frames=int(config["crop_frames"]), mixup=float(config["mixup"]),
                  specaugment=bool(config["specaugment"]),
                  resume=has_run(out))  # a restored trial continues its own run
    train(cfg, callbacks=(TuneReportCallback(),))


def _search_space(settings: TuneSettings) -> dict:
    """LR log-uniform; crop, mixup and SpecAugment from their lists."""
    return {
        "lr": tune.loguniform(settings.lr_min, settings.lr_max),
        "crop_frames": tune.choice(list(settings.crops)),
        "mixup": tune.choice(list(settings.mixups)),
        "specaugment": tune.choice(list(settings.specaugment)),
    }


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


def _plot(trials: pd.DataFrame, uri: str) -> None:
    """PNG: each trial's best lwlrap against its LR (log axis), coloured by crop length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for crop, group in trials.groupby("crop_frames"):
        ax.scatter(group["lr"], group["lwlrap"], s=40, label=f"crop {crop} frames")
    ax.set_xscale("log")
    ax.set_xlabel("max learning rate (one-cycle)")
    ax.set_ylabel("best validation lwlrap")
    ax.set_title("Ray Tune trials")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    storage.write_bytes(uri, buffer.getvalue())


def _plain(value):
    """numpy scalars -> Python values (for JSON and flags)."""
    return value.item() if hasattr(value, "item") else value

