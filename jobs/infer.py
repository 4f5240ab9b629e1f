"""Score test clips with one or more trained models and TTA (Ray Data batch inference)."""

import argparse
import sys

from fatlib.cli import run_job
from fatlib.infer import InferConfig, InferResult, infer
from fatlib.scoring import COMBINATIONS


def main() -> int:
    """Parse flags, run inference, print one summary line; user errors exit with code 2."""
    d = InferConfig(models=(), data="", out="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", required=True,
                   help="model artifact directory or s3://...; repeat for a fold ensemble")
    p.add_argument("--data", required=True,
                   help="dataset root (test/), a folder of audio files, or a feature store")
    p.add_argument("--split", default=d.split, help="split to score when --data is a store")
    p.add_argument("--out", required=True, help="predictions root: a directory or s3://...")
    p.add_argument("--tta", type=int, default=d.tta, help="crops per clip (1: one centred crop)")
    p.add_argument("--tta-combine", choices=COMBINATIONS, default=d.combine)
    p.add_argument("--workers", type=int, default=None, help="scoring actors")
    p.add_argument("--gpus-per-worker", type=float, default=d.gpus_per_worker)
    p.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per scoring call")
    p.add_argument("--run-id", default=None, help="default: the UTC time")
    p.add_argument("--node-resource", default=None, metavar="NAME",
                   help="decode audio only on nodes offering this resource (fatlib_cpu)")
    p.add_argument("--incremental", action="store_true",
                   help="score only clips no earlier successful run under --out scored")
    args = p.parse_args()
    cfg = InferConfig(models=tuple(args.model), data=args.data, out=args.out, split=args.split,
                      tta=args.tta, combine=args.tta_combine, workers=args.workers,
                      gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                      batch_size=args.batch_size, run_id=args.run_id,
                      incremental=args.incremental, node_resource=args.node_resource)
    return run_job("infer", lambda: infer(cfg), InferResult.summary)


if __name__ == "__main__":
    sys.exit(main())
