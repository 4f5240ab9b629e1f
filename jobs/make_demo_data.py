"""Generate a synthetic dataset in FAT2019's Kaggle layout and print its summary."""

import argparse
import sys
import time

from fatlib.synth import SynthConfig, generate_dataset


def main() -> int:
    """Parse flags, generate the dataset, print a summary; user errors exit with code 2."""
    defaults = SynthConfig()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="dataset root directory")
    p.add_argument("--curated", type=int, default=defaults.n_curated, help="train_curated clips")
    p.add_argument("--noisy", type=int, default=defaults.n_noisy, help="train_noisy clips")
    p.add_argument("--test", type=int, default=defaults.n_test, help="test clips")
    p.add_argument("--sample-rate", type=int, default=defaults.sample_rate, help="Hz")
    p.add_argument("--min-seconds", type=float, default=defaults.min_seconds)
    p.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    p.add_argument("--noisy-label-error", type=float, default=defaults.noisy_label_error,
                   help="share of the noisy split's labels that are wrong")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = p.parse_args()
    cfg = SynthConfig(
        n_curated=args.curated,
        n_noisy=args.noisy,
        n_test=args.test,
        sample_rate=args.sample_rate,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        noisy_label_error=args.noisy_label_error,
        seed=args.seed,
    )
    start = time.perf_counter()
    try:
        summary = generate_dataset(args.out, cfg, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"make_demo_data: {e} (pass --overwrite to replace it)", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"make_demo_data: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s "
          f"(seed {cfg.seed}, {cfg.sample_rate} Hz)")
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
