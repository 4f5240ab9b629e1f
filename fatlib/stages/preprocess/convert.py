"""Preprocessing stage: Kaggle-layout audio -> Parquet log-mel feature store, with Ray Data.

Every clip is decoded, trimmed, padded and turned into a log-mel on CPU workers (one thread per
task, one Parquet part per batch); bad files become rows of the split's errors table.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import replace

import pyarrow as pa
import ray.data
import torch

from fatlib.core.audio import AudioError
from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS, clip_stats, encode_logmel
from fatlib.io import storage
from fatlib.io.clips import clip_log_mel
from fatlib.io.dataset import Clip, available_splits, class_vocabulary, read_split
from fatlib.io.feature_store import (
    ERRORS_FILE,
    ROW_SCHEMA,
    FeatureStoreError,
    SplitInfo,
    commit_split,
    new_manifest,
    read_manifest,
    write_errors,
    write_rows,
)
from fatlib.stages.preprocess.config import PreprocessConfig, PreprocessResult, SplitResult
from fatlib.stages.runtime import cluster_cpus, ensure_ray, without_op_reservation

STAGING = "_staging"


def preprocess(cfg: PreprocessConfig) -> PreprocessResult:
    """Convert the requested splits, skipping those already done with the same configuration."""
    cfg = replace(cfg, data=storage.absolute(cfg.data), out=storage.absolute(cfg.out))
    classes = class_vocabulary(cfg.data)
    splits = list(cfg.splits) or available_splits(cfg.data)
    if not splits:
        raise FeatureStoreError(f"{cfg.data}: no train_curated.csv, train_noisy.csv or test/")
    # Every manifest is validated before anything is written.
    clips = {split: read_split(cfg.data, split, classes) for split in splits}
    manifest = _open_manifest(cfg, classes)
    ensure_ray()
    workers = cfg.workers or cluster_cpus()
    results = []
    for split in splits:
        if split in manifest["splits"] and not cfg.overwrite:
            results.append(SplitResult(split, skipped=True))
            continue
        results.append(_convert_split(cfg, manifest, split, clips[split], workers))
    storage.remove_tree(storage.join(cfg.out, STAGING))
    return PreprocessResult(cfg.out, cfg.mel.fingerprint, results)


def _open_manifest(cfg: PreprocessConfig, classes: list[str]) -> dict:
    """The store's manifest if compatible; refusal, or a clean slate with overwrite."""
    manifest = read_manifest(cfg.out)
    if manifest is None:
        return new_manifest(cfg.mel, classes, cfg.data)
    conflict = None
    if manifest["fingerprint"] != cfg.mel.fingerprint:
        conflict = (f"holds features with mel fingerprint {manifest['fingerprint']}, "
                    f"this configuration has {cfg.mel.fingerprint}")
    elif manifest["classes"] != classes:
        conflict = "holds features of a dataset with another class vocabulary"
    if conflict is None:
        return manifest
    if not cfg.overwrite:
        raise FeatureStoreError(f"{cfg.out} {conflict}; refusing to mix (use overwrite)")
    for split in manifest["splits"]:
        storage.remove_tree(storage.join(cfg.out, split))
    return new_manifest(cfg.mel, classes, cfg.data)


def _convert_split(
    cfg: PreprocessConfig, manifest: dict, split: str, clips: list[Clip], workers: int
) -> SplitResult:
    """Convert one split into a staging folder with Ray Data, then commit it."""
    start = time.perf_counter()
    staged = storage.join(cfg.out, STAGING, f"{split}-{uuid.uuid4().hex[:8]}")
    reports: list[dict] = []
    if clips:
        items = [{"fname": c.fname, "labels": list(c.labels), "uri": c.uri} for c in clips]
        # One task per block. Tasks of ~batch_size clips amortise the ~30 ms Ray spends between
        # tasks; at least 4 blocks per worker keep the last tasks from leaving a core idle.
        n_blocks = min(len(items), max(4 * workers, math.ceil(len(items) / cfg.batch_size)))
        with without_op_reservation():  # this pipeline has one real operator
            ds = ray.data.from_items(items, override_num_blocks=n_blocks)
            reports = ds.map_batches(
                _convert_batch,
                fn_kwargs={"mel": cfg.mel, "split": split, "staged": staged},
                batch_size=cfg.batch_size,
                batch_format="pyarrow",
                compute=ray.data.TaskPoolStrategy(size=workers),
                num_cpus=1,
                resources={cfg.node_resource: 1} if cfg.node_resource else None,
            ).take_all()
    parts = sorted((r for r in reports if r["kind"] == "part"), key=lambda r: r["name"])
    errors = sorted((r["name"], r["reason"]) for r in reports if r["kind"] == "error")
    converted = sum(r["rows"] for r in parts)
    if converted + len(errors) != len(clips):  # every clip lands exactly once, or it is a bug
        raise RuntimeError(f"{split}: {len(clips)} clips in, {converted + len(errors)} out")
    write_errors(storage.join(staged, ERRORS_FILE), errors)
    info = SplitInfo(
        name=split,
        files=[r["name"] for r in parts],
        rows=converted,
        errors=len(errors),
        audio_seconds=sum(r["audio_seconds"] for r in reports),
        frames=sum(r["frames"] for r in parts),
        bytes=sum(r["bytes"] for r in parts),
        wall_seconds=time.perf_counter() - start,
    )
    commit_split(cfg.out, manifest, staged, info)
    return SplitResult(
        split,
        converted=converted,
        failed=len(errors),
        audio_seconds=info.audio_seconds,
        bytes=info.bytes,
        wall_seconds=info.wall_seconds,
        errors_uri=storage.join(cfg.out, split, ERRORS_FILE),
    )


def _convert_batch(batch: pa.Table, mel: MelConfig, split: str, staged: str) -> pa.Table:
    """Ray Data task: convert a batch of clips, write one Parquet part, report rows and errors."""
    torch.set_num_threads(1)  # one thread per task: Ray schedules one task per CPU
    rows = {name: [] for name in ROW_SCHEMA.names}
    errors: list[tuple[str, str]] = []
    for clip in batch.to_pylist():
        try:
            logmel, seconds = clip_log_mel(clip["uri"], clip["fname"], mel)
        except AudioError as e:
            errors.append((clip["fname"], e.reason))
            continue
        rows["fname"].append(clip["fname"])
        rows["labels"].append(list(clip["labels"]))
        rows["n_frames"].append(logmel.shape[1])
        rows["seconds"].append(seconds)
        rows["logmel"].append(encode_logmel(logmel))
        for name, value in zip(CLIP_STATS, clip_stats(logmel), strict=True):
            rows[name].append(float(value))
    reports = [_report("error", fname, reason=reason) for fname, reason in errors]
    if rows["fname"]:
        # Named by content, so a retried task overwrites its own part instead of adding one.
        digest = hashlib.sha1("\n".join(rows["fname"]).encode()).hexdigest()[:16]
        name = f"part-{digest}.parquet"
        size = write_rows(storage.join(staged, name), rows, mel, split)
        reports.append(_report("part", name, rows=len(rows["fname"]), size=size,
                               seconds=float(sum(rows["seconds"])),
                               frames=int(sum(rows["n_frames"]))))
    return pa.Table.from_pylist(reports, schema=_REPORT_SCHEMA)


_REPORT_SCHEMA = pa.schema([("kind", pa.string()), ("name", pa.string()), ("rows", pa.int64()),
                            ("bytes", pa.int64()), ("audio_seconds", pa.float64()),
                            ("frames", pa.int64()), ("reason", pa.string())])


def _report(kind: str, name: str, *, rows: int = 0, size: int = 0, seconds: float = 0.0,
            frames: int = 0, reason: str = "") -> dict:
    """One row of a batch's report to the driver."""
    return {"kind": kind, "name": name, "rows": rows, "bytes": size, "audio_seconds": seconds,
            "frames": frames, "reason": reason}
