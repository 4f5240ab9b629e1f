"""The tuning stage's settings and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from fatlib.core.bounds import check_bounds
from fatlib.core.cli import command, option
from fatlib.core.config import ConfigError
from fatlib.io import storage
from fatlib.stages.train.config import TrainConfig

SEARCHED = ("lr", "crop_frames", "mixup", "specaugment")  # TrainConfig fields a trial samples
# Always written into the reproducing command, even at their defaults, so it reads complete.
_SHOWN = ("epochs", "fold", *SEARCHED)


@dataclass(frozen=True)
class TuneSettings:
    """Inputs of the tuning stage: the search space, the budget and the fixed training flags."""

    base: TrainConfig = option(cli=False)  # features, workers, fold...: shared by every trial
    out: str = option(help="experiment directory (local or s3://); an existing one is resumed, "
                      "finished trials kept (one where no trial reported an epoch starts afresh)")
    samples: int = option(8, "trials", minimum=1)
    max_concurrent: int = option(2, "trials running at once", minimum=1)
    lr_min: float = option(3e-4, "lowest max LR tried (log-uniform)", above=0)
    lr_max: float = option(3e-2, "highest max LR tried (equal to --lr-min: that LR only)",
                           above=0)
    crops: tuple[int, ...] = option((64, 128, 256), "crop lengths in frames to try", minimum=8)
    mixups: tuple[float, ...] = option((0.0, 0.2, 0.4), "mixup alphas to try", minimum=0)
    # One switch, three searches: both settings sampled (no flag), only on, only off.
    specaugments: bool | None = option(None, "SpecAugment in the trials: all (--specaugments) "
                                       "or none (--no-specaugments)",
                                       default_text="sampled per trial, on or off")
    grace_epochs: int = option(1, "ASHA: every trial runs at least this many epochs "
                               "(<= --epochs)", minimum=1)
    seed: int = option(0, cli=False)  # the search's seed: the job passes --seed

    @property
    def specaugment_choices(self) -> tuple[bool, ...]:
        """The SpecAugment settings trials sample from."""
        return (False, True) if self.specaugments is None else (self.specaugments,)

    def check(self) -> None:
        """ConfigError naming the first flag (or pair of flags) the search cannot run with:
        checked on the driver before Ray starts or anything is written."""
        check_bounds(self)
        out, features = storage.absolute(self.out).rstrip("/"), storage.absolute(
            self.base.features).rstrip("/")
        checks = [
            (self.out != "", "--out is empty"),
            (out != features and not out.startswith(features + "/"),
             f"--out {self.out} is inside the feature store --features {self.base.features}"),
            (self.lr_min <= self.lr_max,
             f"--lr-min {self.lr_min:g} is above --lr-max {self.lr_max:g}"),
            (bool(self.crops), "--crops names no crop length"),
            (bool(self.mixups), "--mixups names no mixup alpha"),
            (self.grace_epochs <= self.base.epochs,
             f"--grace-epochs {self.grace_epochs} is above --epochs {self.base.epochs}, the "
             "most any trial runs"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self._check_trials()

    def _check_trials(self) -> None:
        """ConfigError naming a sampled setting that the training flags refuse (e.g. a crop
        too short for --deltas, mixup under --recipe seed): each trial would fail in Ray."""
        self.base.check()
        for crop, mixup, specaugment in itertools.product(self.crops, self.mixups,
                                                          self.specaugment_choices):
            trial = replace(self.base, lr=self.lr_min, crop_frames=crop, mixup=mixup,
                            specaugment=specaugment)
            try:
                trial.check()
            except ConfigError as e:
                what = [f"--crop-frames {crop}", f"--mixup {mixup:g}",
                        "--specaugment" if specaugment else "--no-specaugment"]
                raise ConfigError(f"a trial with {' '.join(what)} (from --crops, --mixups, "
                                  f"--specaugments): {e}") from None


@dataclass
class TuneResult:
    """The search's outcome: best settings and score, the command that reproduces them."""

    best: dict
    best_lwlrap: float
    command: str
    trials: Any  # pandas DataFrame, best trial first
    out: str

    def summary(self) -> str:
        """Lines for the job to print."""
        shown = ", ".join(f"{k}={self.best[k]}" for k in SEARCHED)
        return "\n".join([
            f"{len(self.trials)} trials; best lwlrap {self.best_lwlrap:.4f} with {shown}",
            f"results: {storage.join(self.out, 'results.csv')}, "
            f"{storage.join(self.out, PLOT)}, {storage.join(self.out, 'best.json')}",
            f"TensorBoard: tensorboard --logdir {self.out}",
            "reproduce the best trial:",
            self.command,
        ])


PLOT = "lwlrap_vs_lr.png"  # drawn by the job (fatlib.report.figures.tune_figure)


def train_command(cfg: TrainConfig) -> str:
    """The jobs/train.py command line that runs cfg (the searched settings always shown)."""
    # A trial's CPU share fits beside the other trials; the reproduced run takes the default.
    return command("jobs/train.py", cfg, exclude=("cpus_per_worker", "resume", "folds"),
                   always=_SHOWN)
