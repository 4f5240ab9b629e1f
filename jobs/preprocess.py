"""Convert a Kaggle-layout dataset (local or s3://) into the Parquet log-mel feature store."""

import sys

from fatlib.core.cli import add_flags, from_args, job_parser, number
from fatlib.stages.preprocess.config import PreprocessConfig, PreprocessResult


def main() -> int:
    """Parse flags, run the stage (and previews), print its summary; user errors exit 2."""
    p = job_parser(__doc__, verbose=True)
    add_flags(p, PreprocessConfig)
    p.add_argument("--preview", type=number(int, minimum=0), default=0, metavar="N",
                   help="also write spectrogram PNGs of N clips per split to <out>/preview/ "
                        "(default: 0)")
    args = p.parse_args()
    cfg = from_args(PreprocessConfig, args)
    # The stage and the pictures load Ray, torch and matplotlib: only after the flags parse.
    from fatlib.report.previews import write_previews
    from fatlib.stages import console
    from fatlib.stages.preprocess.convert import preprocess

    def stage() -> PreprocessResult:
        result = preprocess(cfg)
        if args.preview > 0:
            write_previews(result.out, [s.split for s in result.splits], args.preview, cfg.mel)
        return result

    return console.run_ray_job("preprocess", args.verbose, stage, PreprocessResult.summary)


if __name__ == "__main__":
    sys.exit(main())
