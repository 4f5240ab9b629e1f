"""The tuning stage's settings and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from fatlib.core.bounds import check_bounds
from fatlib.core.cli import command, field_flags, option
from fatlib.core.config import ConfigError
from fatlib.io import storage
from fatlib.stages.train.config import TrainConfig


@dataclass(frozen=True)
class Searched:
    """One TrainConfig field the trials sample: the TuneSettings fields (flags) that give its
    values, and how a trial draws from them."""

    field: str  # the TrainConfig field: the trial's flag, a results.csv column, best.json key
    sources: tuple[str, ...]  # the TuneSettings fields it is drawn from
    # "log-uniform" between two sources (low, high); "one of" the list a source holds;
    # "on/off" a switch source, None sampling both.
    sampled: str

    def choices(self, settings: TuneSettings) -> tuple:
        """The values a trial draws from: (low, high) of a log-uniform range, else each one."""
        values = tuple(getattr(settings, name) for name in self.sources)
        if self.sampled == "log-uniform":
            return values
        if self.sampled == "on/off":
            return (False, True) if values[0] is None else values
        return tuple(values[0])


# The search space: a trial's settings come from here, and so do the space Tune samples, the
# check of every combination, the results table's columns and the printed best command.
SEARCH = (Searched("lr", ("lr_min", "lr_max"), "log-uniform"),
          Searched("crop_frames", ("crops",), "one of"),
          Searched("mixup", ("mixups",), "one of"),
          Searched("specaugment", ("specaugments",), "on/off"))
SEARCHED = tuple(s.field for s in SEARCH)  # TrainConfig fields a trial samples
# Always written into the reproducing command, even at their defaults, so it reads complete.
_SHOWN = ("epochs", "fold", *SEARCHED)


def trial_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """base with each searched field set to values[field], as the field's own type (Tune hands
    numpy scalars)."""
    flags = field_flags(TrainConfig)
    return replace(base, **{s.field: flags[s.field].kind(values[s.field]) for s in SEARCH})


@dataclass(frozen=True)
class TuneSettings:
    """Inputs of the tuning stage: the search space, the budget and the fixed training flags."""

    base: TrainConfig = option(cli=False)  # features, workers, fold...: shared by every trial
    out: str = option(help="experiment directory (local or s3://); an existing one is resumed, "
                      "finished trials kept (one where no trial reported an epoch starts afresh)",
                      empty=False)
    samples: int = option(8, "trials", minimum=1)
    max_concurrent: int = option(2, "trials running at once", minimum=1)
    lr_min: float = option(3e-4, "lowest max LR tried (log-uniform)", above=0)
    lr_max: float = option(3e-2, "highest max LR tried (equal to --lr-min: that LR only)",
                           above=0)
    crops: tuple[int, ...] = option((64, 128, 256), "crop lengths in frames to try", minimum=8,
                                    empty=False)
    mixups: tuple[float, ...] = option((0.0, 0.2, 0.4), "mixup alphas to try", minimum=0,
                                       empty=False)
    # One switch, three searches: both settings sampled (no flag), only on, only off.
    specaugments: bool | None = option(None, "SpecAugment in the trials: all (--specaugments) "
                                       "or none (--no-specaugments)",
                                       default_text="sampled per trial, on or off")
    grace_epochs: int = option(1, "ASHA: every trial runs at least this many epochs "
                               "(<= --epochs)", minimum=1)
    seed: int = option(0, cli=False)  # the search's seed: the job passes --seed

    def check(self) -> None:
        """ConfigError naming the first flag (or pair of flags) the search cannot run with:
        checked on the driver before Ray starts or anything is written."""
        check_bounds(self)
        out, features = storage.absolute(self.out).rstrip("/"), storage.absolute(
            self.base.features).rstrip("/")
        checks = [
            (out != features and not out.startswith(features + "/"),
             f"--out {self.out} is inside the feature store --features {self.base.features}"),
            (self.lr_min <= self.lr_max,
             f"--lr-min {self.lr_min:g} is above --lr-max {self.lr_max:g}"),
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
        # Every combination of the listed values; a log-uniform range at its low end.
        listed = [s for s in SEARCH if s.sampled != "log-uniform"]
        ranges = {s.field: s.choices(self)[0] for s in SEARCH if s.sampled == "log-uniform"}
        train_flags, own_flags = field_flags(TrainConfig), field_flags(TuneSettings)
        for values in itertools.product(*(s.choices(self) for s in listed)):
            picked = dict(zip((s.field for s in listed), values, strict=True))
            try:
                trial_config(self.base, {**ranges, **picked}).check()
            except ConfigError as e:
                what = [" ".join(train_flags[f].words(v)) for f, v in picked.items()]
                sources = [own_flags[n].flag for s in listed for n in s.sources]
                raise ConfigError(f"a trial with {' '.join(what)} (from {', '.join(sources)}): "
                                  f"{e}") from None


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
    # A trial is one model: without --no-self-train, train.py self-trains on a noisy split.
    return command("jobs/train.py", cfg, exclude=("cpus_per_worker", "resume", "folds"),
                   always=_SHOWN) + " --no-self-train"
