"""Train a ResNet on the feature store with Ray Train (DDP); export the best model artifact.
With --folds all, train every fold as one distributed job and ensemble them."""

import argparse
import sys

from fatlib.core.cli import add_flags, from_args, job_parser
from fatlib.stages.train.config import TrainConfig


def main() -> int:
    """Parse flags, train, draw the reports, print the results; user errors exit 2."""
    p = job_parser(__doc__, verbose=True)
    add_flags(p, TrainConfig)
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html with the run's pictures in each run directory "
                        "(default: on)")
    args = p.parse_args()
    cfg = from_args(TrainConfig, args)
    # The stage and the report load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.run_report import write_report
    from fatlib.stages import console
    from fatlib.stages.train.driver import train
    from fatlib.stages.train.kfold import fold_dir, train_folds

    def stage() -> str:
        if cfg.folds == "all":
            result = train_folds(cfg)
            runs = [fold_dir(result.out, k) for k in result.trained]
            summary = result.summary()
        else:
            result = train(cfg)
            runs = [result.out]
            # The workers printed the epoch table as it grew: only the outcome here.
            summary = result.summary().removeprefix(result.table()).strip()
        reports = [write_report(run, cfg.features).html for run in runs] if args.report else []
        return "\n".join([summary, *(f"report: {r}" for r in reports)])

    return console.run_ray_job("train", args.verbose, stage, str)


if __name__ == "__main__":
    sys.exit(main())
