"""What an inference run scores: a feature store split's rows or the audio clips' log-mels, less
what the incremental ledger says is done."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray.data
import torch
from ray.data.expressions import col, lit

from fatlib.core.features import CLIP_STATS
from fatlib.io import files, predictions, storage
from fatlib.io.clips import clip_row
from fatlib.io.dataset import (
    SUBMISSION_CSV,
    TRUTH_CSV,
    list_audio,
    read_split,
    read_truth,
    require_unique_columns,
)
from fatlib.io.feature_store import FeatureStore
from fatlib.stages.infer.config import InferConfig, InferenceError
from fatlib.stages.runtime import cluster_cpus
from fatlib.stages.store_dataset import split_dataset

# Fractional like the scoring actors: on one-CPU nodes, each holding a 0.5-CPU actor, a
# 1-CPU decode task fits nowhere and the pipeline stalls (seen on cluster/local-up.sh).
_DECODE_CPUS = 0.5


@dataclass
class Inputs:
    """What a run scores: rows of fname/logmel/n_frames/error (None when nothing is to be
    scored), the truth, what the ledger let it skip, and the audio files' versions."""

    rows: ray.data.Dataset | None
    truth: dict[str, list[str]] | None
    skipped: int  # already scored
    known_failures: int  # failed before on the same version of their file
    n_rows: int
    versions: dict[str, str] = field(default_factory=dict)


def input_rows(cfg: InferConfig, mel, classes, ledger: predictions.Ledger) -> Inputs:
    """The rows to score: a feature store split's, or the audio clips', less what the
    ledger says is done."""
    store = FeatureStore.find(cfg.data, mel)
    if store is not None:
        clips = store.clips(cfg.split)  # each row's fname, labels and part; no log-mel read
        names = clips.column("fname").to_pylist()
        labels = dict(zip(names, clips.column("labels").to_pylist(), strict=True))
        truth = {f: v for f, v in labels.items() if v} or None
        done = set(labels) & ledger.scored
        if len(done) == len(labels):
            return Inputs(None, truth, len(done), 0, 0)
        # Only parts holding a clip not yet scored are read: a run over a few new clips reads
        # their parts, not the whole split's log-mels.
        todo = {part for fname, part in zip(names, clips.column("file").to_pylist(), strict=True)
                if fname not in done}
        ds = split_dataset(store, cfg.split, ["fname", "logmel", "n_frames", *CLIP_STATS],
                           parts=todo)
        if done:  # pushed down into the Parquet read by Ray's optimiser
            ds = ds.filter(expr=col("fname").not_in(sorted(done)))
        ds = ds.with_column("error", lit(""))
        return Inputs(ds, truth, len(done), 0, len(labels) - len(done))
    folder, clips, truth = _audio_clips(cfg.data, classes)
    versions = files.file_versions(folder)  # "" for a listed clip with no file
    todo = [c for c in clips if not ledger.is_done(c[0], versions.get(c[0], ""))]
    skipped = sum(fname in ledger.scored for fname, _ in clips)
    known_failures = len(clips) - len(todo) - skipped
    if not todo:
        return Inputs(None, truth, skipped, known_failures, 0, versions)
    items = [{"fname": fname, "uri": uri} for fname, uri in todo]
    workers = cluster_cpus()
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * workers))
    ds = ds.map_batches(_log_mels, fn_kwargs={"mel": mel}, batch_size=16, batch_format="pyarrow",
                        num_cpus=_DECODE_CPUS,
                        resources={cfg.node_resource: 1} if cfg.node_resource else None)
    return Inputs(ds, truth, skipped, known_failures, len(todo), versions)


def _audio_clips(data: str, classes: list[str]):
    """(folder, [(fname, uri)], truth) of a dataset root's test split or of a folder of audio
    files."""
    if storage.exists(storage.join(data, "test")):
        folder, clips = storage.join(data, "test"), read_split(data, "test", classes)
    else:
        folder, clips = data, list_audio(data)
    if not clips:
        raise InferenceError(f"{data}: no audio clips to score")
    return folder, [(c.fname, c.uri) for c in clips], read_truth(storage.join(data, TRUTH_CSV))


def check_sample_submission(data: str) -> None:
    """A dataset root's sample_submission.csv must not repeat a column (its columns name the
    submission's)."""
    uri = storage.join(data, SUBMISSION_CSV)
    if storage.exists(storage.join(data, "test")) and storage.is_file(uri):
        require_unique_columns(uri)


def _log_mels(batch: pa.Table, mel) -> dict[str, np.ndarray]:
    """Ray Data task: each clip's log-mel row (io.clips.clip_row, as preprocessing builds it);
    a clip that fails for any per-clip reason is a row with that reason in `error`."""
    torch.set_num_threads(1)
    rows = [clip_row(clip["uri"], clip["fname"], mel) for clip in batch.to_pylist()]
    return {"fname": np.array([r["fname"] for r in rows], dtype=object),
            "logmel": np.array([r["logmel"] for r in rows], dtype=object),
            "n_frames": np.array([r["n_frames"] for r in rows], dtype=np.int64),
            "error": np.array([r["error"] for r in rows], dtype=object),
            **{name: np.array([r[name] for r in rows], dtype=np.float32) for name in CLIP_STATS}}
