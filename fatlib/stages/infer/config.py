"""The inference stage's config and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fatlib.core.cli import option
from fatlib.core.config import TTA_COMBINATIONS
from fatlib.core.errors import UserError
from fatlib.io import storage
from fatlib.io.predictions import SUBMISSION
from fatlib.stages import cluster_options


class InferenceError(UserError):
    """Models, input or output cannot be used together (mismatch, bad run id, no clips)."""


@dataclass(frozen=True)
class InferConfig:
    """Inputs of the inference stage."""

    models: tuple[str, ...] = option(help="model artifact, training run or K-fold run directory "
                                     "(its ensemble), or s3://...; repeat for an ensemble",
                                     flag="model", append=True, empty=False)
    data: str = option(help="dataset root (test/), a folder of audio files, or a feature store")
    out: str = option(help="predictions root: a directory or s3://...")
    split: str = option("test", "split to score when --data is a feature store")
    tta: int = option(4, "crops per clip (1: one centred crop)", minimum=1)
    whole_clip: bool = option(False, "score each clip whole, in one forward over all its "
                              "frames, instead of --tta crops (--tta is then ignored: the run "
                              "records TTA 1)")
    combine: str = option(TTA_COMBINATIONS[0], "how a clip's crop scores become one score per "
                          "class", flag="tta-combine", choices=TTA_COMBINATIONS)
    standardise_classes: bool = option(
        False, "scores from each class's logits standardised over this run's clips (per "
        "model, then averaged): removes the bias a new domain (speaker, microphone) puts on "
        "whole classes; a clip's scores then depend on the clips scored with it, and a run "
        "needs at least 32 clips")
    workers: int | None = option(None, "scoring actors", default_text="as many as the cluster's "
                                 "GPUs hold at --gpus-per-worker, else one per CPU; at most one "
                                 "per 32 clips to score (512 with GPUs)", minimum=1)
    gpus_per_worker: float = option(0.0, "GPUs per scoring actor", minimum=0)
    cpus_per_worker: float = option(0.5, "CPUs per scoring actor (fractional, so decode tasks "
                                    "always find a CPU)", minimum=1e-4)  # Ray's smallest unit
    batch_size: int | None = option(None, "most clips per scoring call (fewer in small runs, "
                                    "so every actor gets several)",
                                    default_text="32 on CPUs, 512 with GPUs", minimum=1)
    run_id: str | None = option(None, "name of this run's folder under --out",
                                default_text="the UTC time, e.g. 20261125T181500Z")
    incremental: bool = option(False, "score only clips no earlier successful run under --out "
                               "scored or failed on (a failed clip again once its file changes)")
    node_resource: str | None = cluster_options.node_resource("decode audio")
    wait_for_resources: float = cluster_options.wait_for_resources()


@dataclass
class InferResult:
    """What a run wrote and measured."""

    run_id: str
    run_dir: str
    scored: int
    failed: int
    skipped: int  # already scored by an earlier run (--incremental)
    models: int
    tta: int
    wall_seconds: float
    lwlrap: float | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    written: bool = True  # False: incremental run with nothing new, no run directory
    known_failures: int = 0  # clips that failed before on the same file, not retried
    standardised: bool = False  # scores standardised per class over the run's clips
    whole_clip: bool = False  # each clip scored whole, not in TTA crops

    @property
    def submission(self) -> str:
        """Location of submission.csv."""
        return storage.join(self.run_dir, SUBMISSION)

    def summary(self) -> str:
        """One line for the job to print."""
        known = ([f"{self.known_failures} failed before and unchanged since"]
                 if self.known_failures else [])
        if not self.written:
            return (f"run {self.run_id}: nothing new to score "
                    f"({', '.join([f'{self.skipped} already scored', *known])}); nothing written")
        parts = [f"run {self.run_id}: {self.scored} clips scored"]
        extra = [f"{self.failed} failed"] if self.failed else []
        extra += [f"{self.skipped} already scored"] if self.skipped else []
        extra += known
        parts.append(f" ({', '.join(extra)})" if extra else "")
        parts.append(f" with {self.models} model(s) x "
                     + ("whole clips" if self.whole_clip else f"TTA {self.tta}"))
        parts.append(", classes standardised over the run" if self.standardised else "")
        parts.append(f" in {self.wall_seconds:.1f} s")
        if self.lwlrap is not None:
            parts.append(f"; lwlrap {self.lwlrap:.4f}")
        parts.append(f"; submission: {self.submission}")
        return "".join(parts)
