"""Convert a Kaggle-layout dataset (local or s3://) into the Parquet log-mel feature store."""

import argparse
import sys

from fatlib.cli import run_job
from fatlib.config import MelConfig
from fatlib.preprocess import PreprocessConfig, PreprocessResult, preprocess


def main() -> int:
    """Parse flags, run the stage, print its summary; user errors: one line, exit code 2."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="dataset root: a directory or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="feature store root: a directory or s3://...")
    p.add_argument("--splits", default="",
                   help="comma-separated subset of train_curated,train_noisy,test (default: all)")
    p.add_argument("--workers", type=int, default=None,
                   help="concurrent conversion tasks (default: one per CPU in the cluster)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="clips per task and Parquet part, at most")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also write spectrogram PNGs of N clips per split to <out>/preview/")
    p.add_argument("--node-resource", default=None, metavar="NAME",
                   help="run conversion only on nodes offering this custom resource "
                        "(cluster.yaml: fatlib_cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo finished splits; replace a store built with another config")
    args = p.parse_args()
    cfg = PreprocessConfig(
        data=args.data,
        out=args.out,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        workers=args.workers,
        batch_size=args.batch_size,
        mel=MelConfig(),
        overwrite=args.overwrite,
        preview=args.preview,
        node_resource=args.node_resource,
    )
    return run_job("preprocess", lambda: preprocess(cfg), PreprocessResult.summary)


if __name__ == "__main__":
    sys.exit(main())
