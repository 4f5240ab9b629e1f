"""Score test clips with one or more trained models and TTA (Ray Data batch inference)."""

import sys

from fatlib.core.cli import add_flags, from_args, job_parser
from fatlib.stages.infer.config import InferConfig, InferResult


def main() -> int:
    """Parse flags, run inference, print one summary line; user errors exit with code 2."""
    p = job_parser(__doc__, verbose=True)
    add_flags(p, InferConfig)
    args = p.parse_args()
    cfg = from_args(InferConfig, args)
    # Ray and torch: only after the flags parse.
    from fatlib.stages import console
    from fatlib.stages.infer.pipeline import infer

    return console.run_ray_job("infer", args.verbose, lambda: infer(cfg), InferResult.summary)


if __name__ == "__main__":
    sys.exit(main())
