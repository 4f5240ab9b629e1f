"""Generate a synthetic dataset in FAT2019's Kaggle layout and print its summary."""

import sys
import time

from fatlib.core.cli import add_flags, from_args, job_parser
from fatlib.tools.synth import SynthConfig, generate_dataset


def main() -> int:
    """Parse flags, generate the dataset, print a summary; user errors exit with code 2."""
    p = job_parser(__doc__)
    p.add_argument("--out", required=True, help="dataset root directory (required)")
    add_flags(p, SynthConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = p.parse_args()
    cfg = from_args(SynthConfig, args)
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
