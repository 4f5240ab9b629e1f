"""Preprocessing stage: Kaggle-layout audio -> Parquet log-mel feature store, with Ray Data.

Every clip is decoded, trimmed, padded and turned into a log-mel on CPU workers (one thread per
task, one Parquet part per batch); a clip that cannot be read or decoded becomes a row of the
split's errors table. Each split records a digest of the rows (fname + labels) it was built
from, so a re-run over a grown or shrunk CSV converts only the new clips and drops the removed.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace

import pyarrow as pa
import ray.data
import torch

from fatlib.core.audio import AudioError
from fatlib.core.config import MelConfig
from fatlib.core.errors import redact
from fatlib.core.features import CLIP_STATS, clip_stats, encode_logmel
from fatlib.io import storage
from fatlib.io.clips import clip_log_mel
from fatlib.io.dataset import (
    Clip,
    available_splits,
    class_vocabulary,
    clips_digest,
    read_split,
    require_dataset,
)
from fatlib.io.feature_store import (
    ERRORS_FILE,
    MANIFEST,
    ROW_SCHEMA,
    FeatureStoreError,
    SplitInfo,
    commit_split,
    mel_differences,
    new_manifest,
    part_name,
    read_manifest,
    rewrite_part,
    stored_clips,
    write_errors,
    write_rows,
)
from fatlib.stages.preprocess.config import PreprocessConfig, PreprocessResult, SplitResult
from fatlib.stages.runtime import (
    cluster_cpus,
    ensure_ray,
    require_resources,
    without_op_reservation,
)

STAGING = "_staging"
# What reading and decoding one clip can raise because of that clip (unreadable, a directory,
# permissions, a vanished object, undecodable or too short audio): a row of the errors table.
# Anything else is a bug in fatlib and stays a traceback.
CLIP_FAILURES = (AudioError, storage.StorageError, OSError)


class NothingConvertedError(FeatureStoreError):
    """Every clip of a split failed: the split is not committed."""


@dataclass
class _Plan:
    """What this run does to one split."""

    clips: list[Clip]  # every clip the split lists now
    digest: str  # io.dataset.clips_digest(clips)
    convert: list[Clip]  # the clips decoded in this run
    stored: pa.Table | None = None  # the committed rows (io.feature_store.stored_clips), when
    # the split is updated in place rather than rebuilt
    removed: list[str] = field(default_factory=list)  # stored fnames the split no longer lists
    up_to_date: bool = False


def preprocess(cfg: PreprocessConfig) -> PreprocessResult:
    """Convert the requested splits: new ones whole, changed ones by their new and removed clips,
    unchanged ones not at all; NothingConvertedError for splits where every clip failed."""
    cfg = replace(cfg, data=storage.absolute(cfg.data), out=storage.absolute(cfg.out))
    require_dataset(cfg.data)
    splits = list(cfg.splits) or available_splits(cfg.data)
    if not splits:
        raise FeatureStoreError(f"{cfg.data}: no train_curated.csv, train_noisy.csv or test/")
    classes = class_vocabulary(cfg.data)
    # Every manifest is validated, and every refusal made, before anything is written.
    clips = {split: read_split(cfg.data, split, classes) for split in splits}
    manifest = _open_manifest(cfg, classes)
    plans = {split: _plan(cfg, manifest, split, clips[split]) for split in splits}
    workers = 0
    if any(plan.convert for plan in plans.values()):
        ensure_ray()
        require_resources([{"CPU": 1.0, **({cfg.node_resource: 1.0} if cfg.node_resource
                                           else {})}], "preprocessing", cfg.wait_for_resources)
        workers = cfg.workers or cluster_cpus()
    results, failures = [], []
    for split in splits:
        if plans[split].up_to_date:
            _record_digest(cfg.out, manifest, split, plans[split].digest)
            results.append(SplitResult(split, skipped=True))
            continue
        try:
            results.append(_convert_split(cfg, manifest, split, plans[split], workers))
        except NothingConvertedError as e:  # the other splits still get their chance
            failures.append(str(e))
    storage.remove_tree(storage.join(cfg.out, STAGING))
    if failures:
        done = [r.split for r in results]
        raise NothingConvertedError("; ".join(failures)
                                    + (f" ({', '.join(done)} done)" if done else ""))
    return PreprocessResult(cfg.out, cfg.mel.fingerprint, results)


def _open_manifest(cfg: PreprocessConfig, classes: list[str]) -> dict:
    """The store's manifest if compatible; refusal, or a clean slate with overwrite."""
    manifest = read_manifest(cfg.out)
    if manifest is None:
        return new_manifest(cfg.mel, classes, cfg.data)
    conflict = None
    if manifest["fingerprint"] != cfg.mel.fingerprint:
        conflict = (f"holds features with mel fingerprint {manifest['fingerprint']}, "
                    f"this configuration has {cfg.mel.fingerprint} "
                    f"({mel_differences(manifest, cfg.mel)})")
    elif manifest["classes"] != classes:
        conflict = "holds features of a dataset with another class vocabulary"
    if conflict is None:
        return manifest
    if not cfg.overwrite:
        raise FeatureStoreError(f"{cfg.out} {conflict}; refusing to mix (use overwrite)")
    for split in manifest["splits"]:
        storage.remove_tree(storage.join(cfg.out, split))
    return new_manifest(cfg.mel, classes, cfg.data)


def _plan(cfg: PreprocessConfig, manifest: dict, split: str, clips: list[Clip]) -> _Plan:
    """Whole conversion, nothing, or the update that brings a committed split up to date.

    Splits committed before digests existed are compared by the rows they actually hold.
    """
    digest = clips_digest(clips)
    entry = manifest["splits"].get(split)
    if entry is None or cfg.overwrite:
        return _Plan(clips, digest, convert=clips)
    if entry.get("clips_digest") == digest:
        return _Plan(clips, digest, convert=[], up_to_date=True)
    stored = stored_clips(cfg.out, split)
    have = dict(zip(stored.column("fname").to_pylist(), stored.column("labels").to_pylist(),
                    strict=True))
    listed = {c.fname: c for c in clips}
    _refuse_relabelled(cfg.out, split, have, listed)
    if not entry.get("clip_stats"):  # format 1: rebuilt whole, so all its rows share one format
        return _Plan(clips, digest, convert=clips)
    # Clips without a row are converted: the new ones, and earlier failures still listed.
    convert = [c for c in clips if c.fname not in have]
    removed = sorted(set(have) - set(listed))
    up_to_date = not convert and not removed and entry["errors"] == 0
    return _Plan(clips, digest, convert, stored, removed, up_to_date)


def _refuse_relabelled(out: str, split: str, have: dict[str, list[str]],
                       listed: dict[str, Clip]) -> None:
    """FeatureStoreError naming the first stored clip whose labels the CSV now changes."""
    changed = sorted(f for f, labels in have.items()
                     if f in listed and sorted(labels) != sorted(listed[f].labels))
    if changed:
        first = changed[0]
        raise FeatureStoreError(
            f"{out}: {len(changed)} clip(s) of {split} relabelled since it was preprocessed "
            f"(first: {first} {','.join(have[first])} -> {','.join(listed[first].labels)}); "
            "refusing to keep stale labels (use overwrite to rebuild the split)"
        )


def _record_digest(out: str, manifest: dict, split: str, digest: str) -> None:
    """Write the digest of an unchanged split into the manifest (stores from before digests)."""
    if manifest["splits"][split].get("clips_digest") != digest:
        manifest["splits"][split]["clips_digest"] = digest
        storage.write_json(storage.join(out, MANIFEST), manifest)


def _convert_split(
    cfg: PreprocessConfig, manifest: dict, split: str, plan: _Plan, workers: int
) -> SplitResult:
    """Convert a split's new clips into a staging folder with Ray Data, then commit it with the
    rows it keeps; NothingConvertedError, and nothing committed, when no row would be left."""
    start = time.perf_counter()
    staged = storage.join(cfg.out, STAGING, f"{split}-{uuid.uuid4().hex[:8]}")
    reports = _convert_clips(cfg, split, plan.convert, staged, workers)
    new_parts = [r for r in reports if r["kind"] == "part"]
    errors = sorted((r["name"], r["reason"]) for r in reports if r["kind"] == "error")
    converted = sum(r["rows"] for r in new_parts)
    if converted + len(errors) != len(plan.convert):  # every clip lands exactly once, or a bug
        raise RuntimeError(f"{split}: {len(plan.convert)} clips in, {converted + len(errors)} out")
    keep, kept_parts = _kept_parts(cfg.out, split, plan, staged)
    parts = sorted(new_parts + kept_parts, key=lambda r: r["name"])
    rows = sum(r["rows"] for r in parts)
    if rows == 0 and plan.clips:
        fname, reason = errors[0]
        raise NothingConvertedError(
            f"{split}: none of its {len(plan.clips)} clips converted (first: {fname}: {reason}); "
            "nothing committed")
    write_errors(storage.join(staged, ERRORS_FILE), errors)
    info = SplitInfo(
        name=split,
        files=[r["name"] for r in parts],
        rows=rows,
        errors=len(errors),
        audio_seconds=sum(r["audio_seconds"] for r in parts),
        frames=sum(r["frames"] for r in parts),
        bytes=sum(r["bytes"] for r in parts),
        wall_seconds=time.perf_counter() - start,
        clips_digest=plan.digest,
    )
    commit_split(cfg.out, manifest, staged, info, keep=keep)
    return SplitResult(
        split,
        converted=converted,
        failed=len(errors),
        removed=len(plan.removed),
        kept=rows - converted if plan.stored is not None else None,
        audio_seconds=sum(r["audio_seconds"] for r in new_parts),
        bytes=info.bytes,
        wall_seconds=info.wall_seconds,
        errors_uri=storage.join(cfg.out, split, ERRORS_FILE),
    )


def _convert_clips(cfg: PreprocessConfig, split: str, clips: list[Clip], staged: str,
                   workers: int) -> list[dict]:
    """Ray Data over the clips: Parquet parts written under staged; one report per part and
    per failed clip."""
    if not clips:
        return []
    items = [{"fname": c.fname, "labels": list(c.labels), "uri": c.uri} for c in clips]
    # One task per block. Tasks of ~batch_size clips amortise the ~30 ms Ray spends between
    # tasks; at least 4 blocks per worker keep the last tasks from leaving a core idle.
    n_blocks = min(len(items), max(4 * workers, math.ceil(len(items) / cfg.batch_size)))
    with without_op_reservation():  # this pipeline has one real operator
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        return ds.map_batches(
            _convert_batch,
            fn_kwargs={"mel": cfg.mel, "split": split, "staged": staged},
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            # No more tasks than blocks: Ray warns of a pool it cannot fill (a small update).
            compute=ray.data.TaskPoolStrategy(size=min(workers, n_blocks)),
            num_cpus=1,
            resources={cfg.node_resource: 1} if cfg.node_resource else None,
        ).take_all()


def _kept_parts(out: str, split: str, plan: _Plan, staged: str) -> tuple[list[str], list[dict]]:
    """(names of the committed parts that stay as they are, one report per part kept): parts
    holding removed clips are rewritten without them into staged."""
    if plan.stored is None:
        return [], []
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(plan.stored.column("file").to_pylist()):
        by_file[name].append(i)
    removed = set(plan.removed)
    keep, reports = [], []
    for name, indices in sorted(by_file.items()):
        rows = plan.stored.take(indices)
        if removed.isdisjoint(rows.column("fname").to_pylist()):
            keep.append(name)
            size = storage.file_size(storage.join(out, split, name))
        else:
            rewritten = rewrite_part(storage.join(out, split, name), staged, removed)
            if rewritten is None:  # every clip of this part was removed
                continue
            name, rows = rewritten
            size = storage.file_size(storage.join(staged, name))
        reports.append(_report("part", name, rows=len(rows), size=size,
                               seconds=float(sum(rows.column("seconds").to_pylist())),
                               frames=int(sum(rows.column("n_frames").to_pylist()))))
    return keep, reports


def _convert_batch(batch: pa.Table, mel: MelConfig, split: str, staged: str) -> pa.Table:
    """Ray Data task: convert a batch of clips, write one Parquet part, report rows and errors."""
    torch.set_num_threads(1)  # one thread per task: Ray schedules one task per CPU
    rows = {name: [] for name in ROW_SCHEMA.names}
    errors: list[tuple[str, str]] = []
    for clip in batch.to_pylist():
        try:
            logmel, seconds = clip_log_mel(clip["uri"], clip["fname"], mel)
        except CLIP_FAILURES as e:
            errors.append((clip["fname"], _failure_reason(e)))
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
        name = part_name(rows["fname"])
        size = write_rows(storage.join(staged, name), rows, mel, split)
        reports.append(_report("part", name, rows=len(rows["fname"]), size=size,
                               seconds=float(sum(rows["seconds"])),
                               frames=int(sum(rows["n_frames"]))))
    return pa.Table.from_pylist(reports, schema=_REPORT_SCHEMA)


def _failure_reason(e: Exception) -> str:
    """The errors table's reason for a clip that raised one of CLIP_FAILURES."""
    if isinstance(e, AudioError):
        return e.reason
    return redact(f"cannot read: {e}")


_REPORT_SCHEMA = pa.schema([("kind", pa.string()), ("name", pa.string()), ("rows", pa.int64()),
                            ("bytes", pa.int64()), ("audio_seconds", pa.float64()),
                            ("frames", pa.int64()), ("reason", pa.string())])


def _report(kind: str, name: str, *, rows: int = 0, size: int = 0, seconds: float = 0.0,
            frames: int = 0, reason: str = "") -> dict:
    """One row of a batch's report to the driver."""
    return {"kind": kind, "name": name, "rows": rows, "bytes": size, "audio_seconds": seconds,
            "frames": frames, "reason": reason}
