"""Search LR / crop / mixup / SpecAugment with Ray Tune (ASHA on validation lwlrap)."""

import sys

from fatlib.core.cli import add_flags, from_args, job_parser
from fatlib.io import storage
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.tune.config import PLOT, SEARCHED, TuneResult, TuneSettings

# Every trial shares the training flags except those the search samples; --out is the
# experiment's, --resume is implicit (an existing experiment resumes).
_NOT_TRAIN_FLAGS = ("out", "resume", "folds", *SEARCHED)


def parse(argv: list[str] | None = None) -> tuple[TuneSettings, bool]:
    """The search's settings and --verbose from the command line (sys.argv by default)."""
    p = job_parser(__doc__, verbose=True)
    add_flags(p, TuneSettings)
    add_flags(p, TrainConfig, exclude=_NOT_TRAIN_FLAGS, defaults={"workers": 1})
    args = p.parse_args(argv)
    base = from_args(TrainConfig, args, exclude=_NOT_TRAIN_FLAGS, out="")
    return from_args(TuneSettings, args, base=base, seed=base.seed), args.verbose


def main() -> int:
    """Parse flags, run or resume the search, print the best trial's train.py command."""
    settings, verbose = parse()
    # The search and the plot load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.figures import save_png, tune_figure
    from fatlib.stages import console
    from fatlib.stages.tune.search import tune_training

    def stage() -> TuneResult:
        result = tune_training(settings)
        save_png(tune_figure(result.trials), storage.join(result.out, PLOT))
        return result

    return console.run_ray_job("tune", verbose, stage, TuneResult.summary)


if __name__ == "__main__":
    sys.exit(main())
