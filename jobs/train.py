"""Train a ResNet on the feature store with Ray Train (DDP); export the best model artifact."""

import argparse
import sys

from fatlib.cli import run_job
from fatlib.train import TrainConfig, TrainResult, train


def _fold(text: str) -> tuple[int, int]:
    """'k/K' -> (k, K)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fold wants k/K, e.g. 0/5 (got {text!r})") from None
    return k, n


def main() -> int:
    """Parse flags, train, print the epoch table and where the model is; user errors exit 2."""
    d = TrainConfig(features="", out="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True, help="feature store: a directory or s3://...")
    p.add_argument("--out", required=True, help="run directory: a directory or s3://...")
    p.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers (DDP)")
    p.add_argument("--gpus-per-worker", type=float, default=d.gpus_per_worker)
    p.add_argument("--cpus-per-worker", type=float, default=None)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr, help="maximum LR of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--crop-frames", type=int, default=d.crop_frames)
    p.add_argument("--fold", type=_fold, default=(d.fold, d.n_folds), help="k/K, e.g. 0/5")
    p.add_argument("--noisy", choices=["off", "mix"], default=d.noisy)
    p.add_argument("--noisy-weight", type=float, default=d.noisy_weight)
    p.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    p.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=d.specaugment)
    p.add_argument("--arch", default=d.arch, help="resnet18 or resnet34")
    p.add_argument("--recipe", choices=["default", "seed"], default=d.recipe)
    p.add_argument("--normalisation", choices=["color", "clip", "global"],
                   default=d.normalisation,
                   help="input scaling: the seed's per-clip uint8 colour mapping (3 channels), "
                        "per-clip standardisation, or the training set's dB statistics")
    p.add_argument("--valid-crops", type=int, default=d.valid_crops)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-failures", type=int, default=d.max_failures)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=d.report,
                   help="write <out>/report.html with the run's pictures (default: on)")
    args = p.parse_args()
    cfg = TrainConfig(
        features=args.features, out=args.out, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        batch_size=args.batch_size, crop_frames=args.crop_frames, fold=args.fold[0],
        n_folds=args.fold[1], noisy=args.noisy, noisy_weight=args.noisy_weight,
        mixup=args.mixup, specaugment=args.specaugment, arch=args.arch, recipe=args.recipe,
        valid_crops=args.valid_crops, normalisation=args.normalisation, seed=args.seed,
        max_failures=args.max_failures,
        resume=args.resume, report=args.report,
    )
    return run_job("train", lambda: train(cfg), TrainResult.summary)


if __name__ == "__main__":
    sys.exit(main())
