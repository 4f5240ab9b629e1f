"""Draw a training run's pictures and write <run>/report.html (spectrograms, curves, Grad-CAM)."""

import sys

from fatlib.core.cli import job_parser, number, run_job


def main() -> int:
    """Parse flags, write the report, print where it is; user errors exit with code 2."""
    p = job_parser(__doc__)
    p.add_argument("--run", required=True, help="run directory (local or s3://)")
    p.add_argument("--features", default=None,
                   help="feature store (default: the one the run was trained on)")
    p.add_argument("--clips", type=number(int, minimum=0), default=4,
                   help="validation clips to show with Grad-CAM (default: 4)")
    args = p.parse_args()
    from fatlib.report.run_report import write_report  # torch, matplotlib: after parsing

    return run_job("report", lambda: write_report(args.run, args.features, args.clips),
                   lambda r: f"report: {r.html} ({len(r.pictures)} pictures)")


if __name__ == "__main__":
    sys.exit(main())
