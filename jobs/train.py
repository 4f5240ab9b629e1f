"""Train a ResNet on the feature store with Ray Train (DDP); export the best model artifact.
With --folds all, train every fold as one distributed job and ensemble them; with --self-train,
a K-fold teacher relabels train_noisy for a K-fold student."""

import argparse
import sys

from fatlib.core.cli import add_flags, from_args, job_parser, number
from fatlib.stages.train.config import TrainConfig


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The training config and the job's own flags from the command line (sys.argv by
    default)."""
    p = job_parser(__doc__, verbose=True)
    add_flags(p, TrainConfig)
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html with the run's pictures in each run directory "
                        "(default: on)")
    p.add_argument("--self-train", action=argparse.BooleanOptionalAction, default=False,
                   help="K-fold teacher in <out>/teacher, train_noisy relabelled by its ensemble "
                        "(<out>/noisy_labels.csv), K-fold student in <out>/student on the "
                        "curated and relabelled clips; resumable (default: off)")
    p.add_argument("--agree", type=number(float, above=0, maximum=1), default=0.5, metavar="SCORE",
                   help="with --self-train: the teacher's score that confirms a noisy label or "
                        "assigns one (default: 0.5)")
    args = p.parse_args(argv)
    return from_args(TrainConfig, args), args


def main() -> int:
    """Parse flags, train, draw the reports, print the results; user errors exit 2."""
    cfg, args = parse()
    # The stage and the report load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.run_report import write_report
    from fatlib.stages import console
    from fatlib.stages.self_train.self_training import self_train
    from fatlib.stages.train.driver import train
    from fatlib.stages.train.kfold import train_folds

    def stage() -> str:
        if args.self_train:
            result = self_train(cfg, args.agree)
            student = result.student
            runs = fold_runs_to_report(student.out, len(student.fold_lwlrap), student.trained)
            summary = result.summary()
        elif cfg.folds == "all":
            result = train_folds(cfg)
            runs = fold_runs_to_report(result.out, len(result.fold_lwlrap), result.trained)
            summary = result.summary()
        else:
            result = train(cfg)
            runs = [result.out]
            # The workers printed the epoch table as it grew: only the outcome here.
            summary = result.summary().removeprefix(result.table()).strip()
        reports = [write_report(run, cfg.features).html for run in runs] if args.report else []
        return "\n".join([summary, *(f"report: {r}" for r in reports)])

    return console.run_ray_job("train", args.verbose, stage, str)


def fold_runs_to_report(out: str, n_folds: int, trained: list[int]) -> list[str]:
    """The fold runs of a K-fold directory whose report.html this invocation writes: those it
    trained, and every other one without a report (a fold finished by an earlier invocation
    that was interrupted before it wrote its reports)."""
    from fatlib.io import storage
    from fatlib.report.run_report import REPORT
    from fatlib.stages.train.kfold import fold_dir

    runs = [fold_dir(out, k) for k in range(n_folds)]
    return [run for k, run in enumerate(runs)
            if k in trained or not storage.is_file(storage.join(run, REPORT))]


if __name__ == "__main__":
    sys.exit(main())
