"""Benchmarks recorded in BENCHMARKS.md: `python jobs/benchmark.py NAME [...]`."""

import os

# Per-core figures: pin every math library to one thread before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402

from fatlib.core.cli import number  # noqa: E402

# The benchmarks that start Ray as the jobs do (stages.runtime). `preprocess` keeps the bare
# Ray it has been timed on since issue 3 (no dashboard); the others start no Ray.
RAY_BENCHES = ("train", "infer", "scale")


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default, except a None one (its help says what it does)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    """The benchmarks and their flags (defaults shown)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=_Defaults)
    sub = parser.add_subparsers(dest="bench", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        bench = sub.add_parser(name, help=help,
                               formatter_class=_Defaults)
        if name in RAY_BENCHES:
            bench.add_argument("--verbose", action="store_true",
                               help="Ray's own logs on the console (else in a file named in "
                                    "one line)")
        return bench

    feats = add("features", "per-clip log-mel path: seed (librosa) vs fatlib")
    feats.add_argument("--clips", type=int, default=40, help="number of clips")
    feats.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    feats.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    prep = add("preprocess", "Ray Data preprocessing vs the seed's loop")
    prep.add_argument("--clips", type=int, default=300, help="synthetic clips (1-15 s)")
    prep.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    prep.add_argument("--rounds", type=int, default=2, help="timed rounds; the best counts")
    inp = add("input", "the training worker's input path, samples/s per CPU core")
    inp.add_argument("--batch-size", type=int, default=256, help="crops per batch")
    inp.add_argument("--rounds", type=int, default=10, help="timed batches per variant")
    tr = add("train", "without --device: Ray Train DDP vs a plain PyTorch loop on CPUs; with "
                      "--device: the training stage vs the train step alone on that device")
    tr.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="time the training stage on this device")
    tr.add_argument("--steps", type=int, default=12, help="timed steps (DDP vs plain)")
    tr.add_argument("--batch-size", type=int, default=None,
                    help="global batch (default: 64 DDP vs plain, 256 with --device)")
    tr.add_argument("--crop-frames", type=int, default=128, help="crop length in frames")
    tr.add_argument("--workers", type=int, default=2,
                    help="DDP workers = threads of the plain loop")
    tr.add_argument("--arch", default="resnet18", help="architecture from the model registry")
    tr.add_argument("--clips", type=int, default=8192, help="synthetic clips (with --device)")
    tr.add_argument("--epochs", type=int, default=3, help="epochs (with --device)")
    inf = add("infer", "without --device: the stage from audio vs a notebook loop on CPUs; "
                       "with --device: the stage from a feature store vs the network alone")
    inf.add_argument("--device", choices=["cpu", "cuda"], default=None,
                     help="time the stage on this device")
    inf.add_argument("--clips", type=int, default=None,
                     help="clips (default: 400 from audio, 8192 with --device); a run pays ~3 s "
                          "to start its actors, so few clips measure mostly that")
    inf.add_argument("--tta", default="1,8", help="TTA crop counts, comma-separated (with "
                                                  "--device: the first)")
    inf.add_argument("--actors", default="1", help="with --device: scoring actor counts to "
                     "time, comma-separated (on a GPU they share the card)")
    tta = add("tta", "test lwlrap per TTA crop count and combination, over all clips and over "
                     "single- and multi-label clips apart; how often a clip's labels are its "
                     "top scores, and the classes its single-label clips miss")
    tta.add_argument("--model", required=True, help="model artifact, or a training or K-fold "
                     "run directory (its ensemble, as jobs/infer.py scores it)")
    tta.add_argument("--features", required=True, help="feature store holding the split")
    tta.add_argument("--split", default="test", help="the store's split to score")
    tta.add_argument("--truth", default=None, help="test_truth.csv (else the split's labels)")
    tta.add_argument("--crops", default="1,2,4,8", help="TTA crop counts, comma-separated")
    tta.add_argument("--whole-clip", action="store_true",
                     help="also score each clip whole (a 'whole clip' row, as jobs/infer.py "
                          "--whole-clip scores)")
    mixes = add("mixes", "a test split of overlapping pairs of a run's held-out curated clips "
                         "(fsdd-poly's recipe), to score with `tta`: hearing two sounds at once "
                         "in sources the model was trained on")
    mixes.add_argument("--data", required=True, help="the dataset the run's store was made from")
    mixes.add_argument("--run", required=True, help="one training run (a fold of a K-fold run)")
    mixes.add_argument("--out", required=True, help="new folder for the split (a dataset)")
    mixes.add_argument("--pairs", type=number(int, minimum=0), default=240,
                       help="overlapping pairs to make")
    mixes.add_argument("--seed", type=int, default=0, help="seed of the draws")
    scale = add("scale", "preprocessing and inference time and peak memory against the number "
                         "of clips (FAT2019's clip lengths), a table and a log-log PNG")
    scale.add_argument("--sizes", default=None,
                       help="clip counts, comma-separated (25,000 clips: ~90 h of audio, ~30 GB "
                            "of WAV in --workdir); default: of 1000,4000,16000,25000 those that "
                            "fit --workdir's free disk, up to a size projected past 20 min")
    scale.add_argument("--png", default="scale.png", help="where the picture goes")
    scale.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    scale.add_argument("--tta", type=int, default=1, help="crops per clip when scoring")
    scale.add_argument("--workdir", default=None, help="folder for the data, stores and "
                       "predictions (removed after; default: the system's temporary folder)")
    return parser


def main() -> None:
    """Parse the benchmark name and its flags, run it, print its report."""
    args = _parser().parse_args()
    # The benchmarks load torch, librosa and Ray: only after the flags parse, and each only
    # what it needs (a bare GPU machine has no librosa, which bench_audio's reference needs).
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    if args.bench in RAY_BENCHES:  # the console a job has: the table, not Ray's logs
        from fatlib.stages import console

        console.setup(args.verbose)
    if args.bench in ("features", "preprocess"):
        from fatlib.tools import bench_audio
    elif args.bench == "input":
        from fatlib.tools import bench_input
    elif args.bench == "scale":
        from fatlib.tools import bench_scale
    elif args.bench == "tta":
        from fatlib.tools import bench_tta
    elif args.bench == "mixes":
        from fatlib.tools import heldout_mixes
    elif getattr(args, "device", None):
        from fatlib.tools import bench_stage
    else:
        from fatlib.tools import bench_model
    if args.bench == "features":
        result = bench_audio.bench_features(args.clips, args.seconds, args.rounds)
    elif args.bench == "preprocess":
        result = bench_audio.bench_preprocess(args.clips, ints(args.workers), args.rounds)
    elif args.bench == "scale":
        result = bench_scale.bench_scale(args.sizes and ints(args.sizes), args.png, args.cores,
                                         args.tta, args.workdir)
    elif args.bench == "input":
        result = bench_input.bench_input(args.batch_size, rounds=args.rounds)
    elif args.bench == "train" and args.device:
        result = bench_stage.bench_train_stage(args.device, args.clips, args.epochs,
                                               args.batch_size or 256)
    elif args.bench == "train":
        result = bench_model.bench_train(args.steps, args.batch_size or 64, args.crop_frames,
                                         args.workers, args.arch)
    elif args.bench == "infer" and args.device:
        result = bench_stage.bench_infer_stage(args.device, args.clips or 8192,
                                               ints(args.tta)[0], ints(args.actors))
    elif args.bench == "infer":
        result = bench_model.bench_infer(args.clips or 400, ints(args.tta))
    elif args.bench == "mixes":  # a folder a user names: their mistakes are one line, exit 2
        from fatlib.core.cli import run_job

        sys.exit(run_job("mixes", lambda: heldout_mixes.build_heldout_mixes(
            args.data, args.run, args.out, args.pairs, args.seed), lambda r: r.format()))
    else:
        result = bench_tta.bench_tta(args.model, args.features, args.truth, args.split,
                                     ints(args.crops), args.whole_clip)
    print(result.format())


if __name__ == "__main__":
    main()
