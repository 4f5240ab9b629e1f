"""Benchmarks recorded in BENCHMARKS.md: `python jobs/benchmark.py features [...]`."""

import os

# Per-core figures: pin every math library to one thread before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402

from fatlib.bench import bench_features  # noqa: E402


def main() -> None:
    """Parse the benchmark name and its flags, run it, print its report."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    feats = sub.add_parser("features", help="per-clip log-mel path: seed (librosa) vs fatlib")
    feats.add_argument("--clips", type=int, default=40, help="number of clips")
    feats.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    feats.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    args = parser.parse_args()
    if args.bench == "features":
        print(bench_features(args.clips, args.seconds, args.rounds).format())


if __name__ == "__main__":
    main()
