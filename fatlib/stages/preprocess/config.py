"""The preprocessing stage's config and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

from dataclasses import dataclass

from fatlib.core.cli import option
from fatlib.core.config import MelConfig
from fatlib.stages import cluster_options


@dataclass(frozen=True)
class PreprocessConfig:
    """Inputs of the preprocessing stage."""

    data: str = option(help="dataset root in the Kaggle layout: a directory or s3://bucket/prefix")
    out: str = option(help="feature store root: a directory or s3://...")
    splits: tuple[str, ...] = option((), "comma-separated subset of "
                                     "train_curated,train_noisy,test", default_text="every split")
    workers: int | None = option(None, "concurrent conversion tasks",
                                 default_text="one per CPU in the cluster", minimum=1)
    node_resource: str | None = cluster_options.node_resource("run conversion")
    wait_for_resources: float = cluster_options.wait_for_resources()
    batch_size: int = option(64, "clips per task and per Parquet part, at most", minimum=1)
    mel: MelConfig = option(default_factory=MelConfig, cli=False)
    overwrite: bool = option(False, "redo finished splits whole (needed once clips are "
                             "relabelled); replace a store built with another MelConfig")


@dataclass
class SplitResult:
    """Outcome for one split."""

    split: str
    converted: int = 0
    failed: int = 0  # clips that failed in this run
    failed_before: int = 0  # stored failures whose file has not changed since: kept as they are
    removed: int = 0  # stored clips the CSV no longer lists, dropped
    kept: int | None = None  # stored rows kept as they were (None: the split was built whole)
    skipped: bool = False
    audio_seconds: float = 0.0
    bytes: int = 0
    wall_seconds: float = 0.0
    errors_uri: str = ""

    def summary(self) -> str:
        """One line: counts (of an update: also removed and kept, and failures kept as their
        files are unchanged), and where the errors are."""
        if self.skipped:
            return (f"{self.split}: already preprocessed with this configuration and these "
                    "files, skipped")
        update = "" if self.kept is None else f", {self.removed} removed, {self.kept} kept"
        if self.failed_before:
            update += f", {self.failed_before} failed before and unchanged since"
        see = f" (see {self.errors_uri})" if self.failed or self.failed_before else ""
        return (f"{self.split}: {self.converted} converted, {self.failed} failed{see}{update}; "
                f"{self.audio_seconds:.0f} audio-s in {self.wall_seconds:.1f} s")


@dataclass
class PreprocessResult:
    """Outcome of the stage: the store, its fingerprint, one result per split."""

    out: str
    fingerprint: str
    splits: list[SplitResult]

    def summary(self) -> str:
        """Lines for the job to print."""
        lines = [r.summary() for r in self.splits]
        lines.append(f"features: {self.out} (mel fingerprint {self.fingerprint})")
        return "\n".join(lines)
