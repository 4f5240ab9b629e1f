"""Train a ResNet on the feature store with Ray Train (DDP); export the best model artifact.
Where the store has train_noisy, the default recipe self-trains: a K-fold teacher relabels
train_noisy for a K-fold student (--no-self-train: one model). With --folds all, train every
fold as one distributed job and ensemble them."""

import argparse
import sys

from fatlib.core.cli import add_flags, from_args, job_parser, number
from fatlib.stages.train.config import TrainConfig


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The training config and the job's own flags from the command line (sys.argv by
    default)."""
    p = job_parser(__doc__, verbose=True)
    # --fold unset: 0/5 for one model, 2 folds for self-training; given, it names one model's
    # fold (or self-training's K with --self-train).
    add_flags(p, TrainConfig, defaults={"fold": None})
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html with the run's pictures in each run directory "
                        "(default: on)")
    p.add_argument("--self-train", action=argparse.BooleanOptionalAction, default=None,
                   help="K-fold teacher (K = 2 unless --fold k/K) in <out>/teacher, train_noisy "
                        "relabelled by its ensemble "
                        "(<out>/noisy_labels.csv), K-fold student in <out>/student on the "
                        "curated and relabelled clips (infer.py --model <out>); resumable "
                        "(default: on where the store has train_noisy, unless --recipe seed, "
                        "--noisy, --noisy-labels, --fold or --folds all asks for something "
                        "else, or --out holds a one-model or K-fold run)")
    p.add_argument("--agree", type=number(float, above=0, maximum=1), default=0.5, metavar="SCORE",
                   help="with --self-train: the teacher's score that confirms a noisy label or "
                        "assigns one (default: 0.5)")
    args = p.parse_args(argv)
    args.fold_given = args.fold is not None
    if not args.fold_given:
        args.fold = (TrainConfig.fold, TrainConfig.n_folds)
    return from_args(TrainConfig, args), args


def main() -> int:
    """Parse flags, train, draw the reports, print the results; user errors exit 2."""
    cfg, args = parse()
    # The stage and the report load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.run_report import write_report
    from fatlib.stages import console
    from fatlib.stages.self_train.self_training import choose, self_train
    from fatlib.stages.train.driver import train
    from fatlib.stages.train.kfold import train_folds

    def stage() -> str:
        run_cfg, self_training, why = choose(cfg, args.self_train, args.fold_given)
        if why:  # the default's choice (self-training costs ~6x one model): said up front
            print(why, flush=True)
        if self_training:
            result = self_train(run_cfg, args.agree)
            student = result.student
            runs = fold_runs_to_report(student.out, len(student.fold_lwlrap), student.trained)
            summary = result.summary()
        elif run_cfg.folds == "all":
            result = train_folds(run_cfg)
            runs = fold_runs_to_report(result.out, len(result.fold_lwlrap), result.trained)
            summary = result.summary()
        else:
            result = train(run_cfg)
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
