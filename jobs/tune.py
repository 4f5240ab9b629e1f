"""Search LR / crop / mixup / SpecAugment with Ray Tune (ASHA on validation lwlrap)."""

import argparse
import sys

from fatlib.cli import run_job
from fatlib.train import TrainConfig
from fatlib.tune import TuneResult, TuneSettings, tune_training


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main() -> int:
    """Parse flags, run or resume the search, print the best trial's train.py command."""
    d = TrainConfig(features="", out="")
    s = TuneSettings(base=d, out="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True, help="feature store: a directory or s3://...")
    p.add_argument("--out", required=True,
                   help="experiment directory; an existing one is resumed, finished trials kept")
    p.add_argument("--samples", type=int, default=s.samples, help="trials")
    p.add_argument("--max-concurrent", type=int, default=s.max_concurrent)
    p.add_argument("--gpus-per-trial", type=float, default=s.gpus_per_trial,
                   help="GPUs per training worker of a trial")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of a full trial (ASHA max)")
    p.add_argument("--workers", type=int, default=1, help="DDP workers per trial")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr-min", type=float, default=s.lr_min)
    p.add_argument("--lr-max", type=float, default=s.lr_max)
    p.add_argument("--crops", default=",".join(map(str, s.crops)), help="crop frames to try")
    p.add_argument("--mixups", default=",".join(map(str, s.mixups)), help="mixup alphas to try")
    p.add_argument("--fold", default="0/5", help="k/K validation fold")
    p.add_argument("--seed", type=int, default=s.seed)
    args = p.parse_args()
    try:
        k, n_folds = (int(v) for v in args.fold.split("/"))
    except ValueError:
        p.error(f"--fold wants k/K, e.g. 0/5 (got {args.fold!r})")
    base = TrainConfig(features=args.features, out="", workers=args.workers, epochs=args.epochs,
                       batch_size=args.batch_size, fold=k, n_folds=n_folds, seed=args.seed)
    settings = TuneSettings(base=base, out=args.out, samples=args.samples,
                            max_concurrent=args.max_concurrent,
                            gpus_per_trial=args.gpus_per_trial, lr_min=args.lr_min,
                            lr_max=args.lr_max, crops=tuple(int(c) for c in args.crops.split(",")),
                            mixups=_floats(args.mixups), seed=args.seed)
    return run_job("tune", lambda: tune_training(settings), TuneResult.summary)


if __name__ == "__main__":
    sys.exit(main())
