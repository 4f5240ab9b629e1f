"""Benchmarks recorded in BENCHMARKS.md: `python jobs/benchmark.py features [...]`."""

import os

# Per-core figures: pin every math library to one thread before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402


def main() -> None:
    """Parse the benchmark name and its flags, run it, print its report."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    feats = sub.add_parser("features", help="per-clip log-mel path: seed (librosa) vs fatlib")
    feats.add_argument("--clips", type=int, default=40, help="number of clips")
    feats.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    feats.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    prep = sub.add_parser("preprocess", help="Ray Data preprocessing vs the seed's loop")
    prep.add_argument("--clips", type=int, default=300, help="synthetic clips (1-15 s)")
    prep.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    prep.add_argument("--rounds", type=int, default=2, help="timed rounds; the best counts")
    tr = sub.add_parser("train", help="Ray Train DDP vs a plain PyTorch loop, CPU")
    tr.add_argument("--steps", type=int, default=12, help="timed training steps")
    tr.add_argument("--batch-size", type=int, default=64, help="global batch")
    tr.add_argument("--crop-frames", type=int, default=128)
    tr.add_argument("--workers", type=int, default=2,
                    help="DDP workers = threads of the plain loop")
    tr.add_argument("--arch", default="resnet18")
    inf = sub.add_parser("infer", help="inference stage vs a per-clip notebook loop, CPU")
    inf.add_argument("--clips", type=int, default=400,
                     help="test clips; a run pays ~3 s to start its actors, so few clips "
                          "measure mostly that")
    inf.add_argument("--tta", default="1,8", help="TTA crop counts to time, comma-separated")
    tta = sub.add_parser("tta", help="test lwlrap per TTA crop count and combination")
    tta.add_argument("--model", required=True, help="model artifact")
    tta.add_argument("--features", required=True, help="feature store holding the split")
    tta.add_argument("--split", default="test")
    tta.add_argument("--truth", default=None, help="test_truth.csv (else the split's labels)")
    tta.add_argument("--crops", default="1,2,4,8")
    args = parser.parse_args()
    # The benchmarks load torch, librosa and Ray: only after the flags parse.
    from fatlib.tools.bench_audio import bench_features, bench_preprocess
    from fatlib.tools.bench_model import bench_infer, bench_train, bench_tta

    if args.bench == "features":
        print(bench_features(args.clips, args.seconds, args.rounds).format())
    elif args.bench == "preprocess":
        workers = tuple(int(w) for w in args.workers.split(","))
        print(bench_preprocess(args.clips, workers, args.rounds).format())
    elif args.bench == "infer":
        print(bench_infer(args.clips, tuple(int(t) for t in args.tta.split(","))).format())
    elif args.bench == "tta":
        crops = tuple(int(c) for c in args.crops.split(","))
        print(bench_tta(args.model, args.features, args.truth, args.split, crops).format())
    elif args.bench == "train":
        print(bench_train(args.steps, args.batch_size, args.crop_frames, args.workers,
                          args.arch).format())


if __name__ == "__main__":
    main()
