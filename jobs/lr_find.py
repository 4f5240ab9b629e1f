"""LR range test on the feature store (fastai's lr_find): prints suggested LRs, writes a plot."""

import argparse
import sys

from fatlib.cli import run_job
from fatlib.lr_find import LRFinderResult, find_lr
from fatlib.train import TrainConfig


def main() -> int:
    """Parse flags, run the sweep, print the suggestion; user errors exit with code 2."""
    d = TrainConfig(features="", out="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True, help="feature store: a directory or s3://...")
    p.add_argument("--start", type=float, default=1e-7, help="first LR of the sweep")
    p.add_argument("--end", type=float, default=10.0, help="last LR of the sweep")
    p.add_argument("--steps", type=int, default=100, help="batches (one LR each)")
    p.add_argument("--plot", default="lr_find.png", help="where the PNG goes (path or s3://)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--crop-frames", type=int, default=d.crop_frames)
    p.add_argument("--arch", default=d.arch)
    p.add_argument("--recipe", choices=["default", "seed"], default=d.recipe)
    p.add_argument("--mixup", type=float, default=d.mixup)
    p.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=d.specaugment)
    p.add_argument("--seed", type=int, default=d.seed)
    args = p.parse_args()
    cfg = TrainConfig(features=args.features, out="", batch_size=args.batch_size,
                      crop_frames=args.crop_frames, arch=args.arch, recipe=args.recipe,
                      mixup=args.mixup, specaugment=args.specaugment, seed=args.seed)
    return run_job("lr_find", lambda: find_lr(cfg, start=args.start, end=args.end,
                                                steps=args.steps, plot=args.plot),
                   LRFinderResult.summary)


if __name__ == "__main__":
    sys.exit(main())
