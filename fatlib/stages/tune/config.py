"""The tuning stage's settings and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fatlib.core.cli import command, option
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
                      "finished trials kept")
    samples: int = option(8, "trials", minimum=1)
    max_concurrent: int = option(2, "trials running at once", minimum=1)
    lr_min: float = option(3e-4, "lowest max LR tried (log-uniform)")
    lr_max: float = option(3e-2, "highest max LR tried")
    crops: tuple[int, ...] = option((64, 128, 256), "crop lengths in frames to try", minimum=8)
    mixups: tuple[float, ...] = option((0.0, 0.2, 0.4), "mixup alphas to try", minimum=0)
    specaugments: tuple[bool, ...] = option((False, True), "SpecAugment settings to try")
    grace_epochs: int = option(1, "ASHA: every trial runs at least this many epochs",
                               minimum=1)
    seed: int = option(0, cli=False)  # the search's seed: the job passes --seed


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
