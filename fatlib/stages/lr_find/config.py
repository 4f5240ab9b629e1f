"""The LR range test's settings and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

from dataclasses import dataclass

from fatlib.core.cli import option


@dataclass(frozen=True)
class SweepSettings:
    """The LR sweep: where it starts and ends, how many batches, where its plot goes."""

    start: float = option(1e-7, "first LR of the sweep", above=0)
    end: float = option(10.0, "last LR of the sweep", above=0)
    steps: int = option(100, "batches (one LR each)", minimum=2)
    plot: str = option("lr_find.png", "where the PNG goes (path or s3://)")


@dataclass
class LRFinderResult:
    """The sweep: LRs tried, raw and smoothed losses, and the two usual suggestions."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    steepest: float  # LR where the smoothed loss falls fastest (per log-LR)
    min_over_10: float  # LR of the lowest smoothed loss, divided by 10
    diverged: bool
    plot: str = ""

    def summary(self) -> str:
        """One line with both suggestions."""
        stop = "stopped at divergence" if self.diverged else "full sweep"
        return (f"LR range test over {len(self.lrs)} steps ({stop}): suggested LR "
                f"{self.steepest:.2e} (steepest descent), {self.min_over_10:.2e} (min / 10)"
                + (f"; plot: {self.plot}" if self.plot else ""))
