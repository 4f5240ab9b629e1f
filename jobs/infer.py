"""Score test clips with one or more trained models and TTA (Ray Data batch inference)."""

import sys

from fatlib.core.cli import add_flags, from_args, job_parser, run_job
from fatlib.stages.infer.config import InferConfig, InferResult


def main() -> int:
    """Parse flags, run inference, print one summary line; user errors exit with code 2."""
    p = job_parser(__doc__)
    add_flags(p, InferConfig)
    cfg = from_args(InferConfig, p.parse_args())
    from fatlib.stages.infer.pipeline import infer  # Ray and torch: only after the flags parse

    return run_job("infer", lambda: infer(cfg), InferResult.summary)


if __name__ == "__main__":
    sys.exit(main())
