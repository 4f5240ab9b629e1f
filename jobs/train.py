"""Train a ResNet on the feature store with Ray Train (DDP); export the best model artifact."""

import argparse
import sys

from fatlib.core.cli import add_flags, from_args, run_job
from fatlib.stages.train.config import TrainConfig, TrainResult


def main() -> int:
    """Parse flags, train, draw the report, print the epoch table; user errors exit 2."""
    p = argparse.ArgumentParser(description=__doc__)
    add_flags(p, TrainConfig)
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write <out>/report.html with the run's pictures (default: on)")
    args = p.parse_args()
    cfg = from_args(TrainConfig, args)
    # The stage and the report load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.run_report import write_report
    from fatlib.stages.train.driver import train

    def stage() -> tuple[TrainResult, str]:
        result = train(cfg)
        return result, write_report(result.out, cfg.features).html if args.report else ""

    def summary(done: tuple[TrainResult, str]) -> str:
        result, report = done
        return result.summary() + (f"\nreport: {report}" if report else "")

    return run_job("train", stage, summary)


if __name__ == "__main__":
    sys.exit(main())
