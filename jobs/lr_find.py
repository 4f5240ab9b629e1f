"""LR range test on the feature store (fastai's lr_find): prints suggested LRs, writes a plot."""

import sys

from fatlib.core.cli import add_flags, from_args, job_parser, run_job
from fatlib.stages.lr_find.config import LRFinderResult, SweepSettings
from fatlib.stages.train.config import TrainConfig

# The sweep trains one fresh model in this process on curated clips with AdamW's defaults: the
# training stage's run-directory, schedule, noisy-data and cluster flags do not apply.
_NOT_SWEEP_FLAGS = ("out", "resume", "folds", "epochs", "lr", "weight_decay", "noisy",
                    "noisy_weight", "noisy_smoothing", "ema",
                    "workers", "gpus_per_worker", "cpus_per_worker", "keep_checkpoints",
                    "max_failures", "valid_crops")


def main() -> int:
    """Parse flags, run the sweep, print the suggestion; user errors exit with code 2."""
    p = job_parser(__doc__)
    add_flags(p, SweepSettings)
    add_flags(p, TrainConfig, exclude=_NOT_SWEEP_FLAGS)
    args = p.parse_args()
    cfg = from_args(TrainConfig, args, exclude=_NOT_SWEEP_FLAGS, out="")
    sweep = from_args(SweepSettings, args)
    # The sweep and the plot load torch and matplotlib: only after the flags parse.
    from fatlib.report.figures import lr_find_figure, save_png
    from fatlib.stages.lr_find.sweep import find_lr

    def stage() -> LRFinderResult:
        result = find_lr(cfg, sweep)
        save_png(lr_find_figure(result), sweep.plot)
        result.plot = sweep.plot
        return result

    return run_job("lr_find", stage, LRFinderResult.summary)


if __name__ == "__main__":
    sys.exit(main())
