"""Preprocessing stage: Kaggle-layout audio -> Parquet log-mel feature store, with Ray Data.

Every clip is decoded, trimmed, padded and turned into a log-mel on CPU workers (one thread per
task, one Parquet part per batch); a clip that cannot be read or decoded becomes a row of the
split's errors table. Each split records a digest of the rows (fname + labels) it was built
from and every row the version of its audio file, so a re-run over a grown or shrunk CSV, or
over replaced or fixed files, converts only the new and changed clips and drops the removed.
The store never deletes what it did not write, and never lies inside the dataset or around it.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace

import pyarrow as pa
import ray.data
import torch

from fatlib.core.config import MelConfig
from fatlib.core.errors import redact
from fatlib.io import storage
from fatlib.io.clips import clip_row
from fatlib.io.dataset import (
    Clip,
    available_splits,
    class_vocabulary,
    clips_digest,
    read_split,
    require_dataset,
    split_source,
    versions_digest,
)
from fatlib.io.feature_store import (
    ERRORS_FILE,
    MANIFEST,
    ROW_SCHEMA,
    FeatureStoreError,
    SplitInfo,
    commit_split,
    discard_store,
    mel_differences,
    new_manifest,
    part_name,
    read_manifest,
    rewrite_part,
    stored_clips,
    stored_errors,
    write_errors,
    write_rows,
)
from fatlib.io.locks import holding
from fatlib.stages.preprocess.config import PreprocessConfig, PreprocessResult, SplitResult
from fatlib.stages.runtime import (
    cluster_cpus,
    ensure_ray,
    require_resources,
    without_op_reservation,
)

STAGING = "_staging"


class NothingConvertedError(FeatureStoreError):
    """Every clip of a split failed: the split is not committed."""


@dataclass
class _Plan:
    """What this run does to one split."""

    clips: list[Clip]  # every clip the split lists now
    digest: str  # io.dataset.clips_digest(clips)
    versions: dict[str, str]  # fname -> its file's version now, "" when no regular file
    convert: list[Clip]  # the clips decoded in this run
    stored: pa.Table | None = None  # the committed rows (io.feature_store.stored_clips), when
    # the split is updated in place rather than rebuilt
    removed: list[str] = field(default_factory=list)  # stored fnames the split no longer lists
    drop: set[str] = field(default_factory=set)  # stored rows that go: removed or reconverted
    failed: list[tuple[str, str]] = field(default_factory=list)  # (fname, reason) of stored
    # failures whose file has not changed since: kept, not retried
    up_to_date: bool = False


@holding("preprocess", lambda cfg: _store_root(cfg))  # before anything is read or written
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
            _record_digests(cfg.out, manifest, split, plans[split])
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
    fresh = new_manifest(cfg.mel, classes, cfg.data)
    discard_store(cfg.out, manifest, fresh)  # the old store's own files, nothing else
    return fresh


def _store_root(cfg: PreprocessConfig) -> str:
    """cfg.out, once checked to be neither the dataset, nor inside it, nor around it: a store
    there could replace the dataset's files (FeatureStoreError, before anything is written)."""
    data, out = storage.absolute(cfg.data), storage.absolute(cfg.out)
    inside, around = storage.contains(data, out), storage.contains(out, data)
    if inside or around:
        where = ("is the dataset" if inside and around else "lies inside the dataset" if inside
                 else "contains the dataset")
        raise FeatureStoreError(redact(f"{out}: the feature store {where} {data}; choose an "
                                       "out location outside the dataset"))
    return cfg.out


def _plan(cfg: PreprocessConfig, manifest: dict, split: str, clips: list[Clip]) -> _Plan:
    """Whole conversion, nothing, or the update that brings a committed split up to date with
    its CSV and its audio files (one listing of the split's folder, no audio read).

    Splits committed before digests existed are compared by the rows they actually hold;
    splits without file versions are rebuilt, never trusted.
    """
    digest = clips_digest(clips)
    on_disk = storage.file_versions(storage.join(cfg.data, split))
    versions = {c.fname: on_disk.get(c.fname, "") for c in clips}
    entry = manifest["splits"].get(split)
    if entry is None or cfg.overwrite or not clips:  # no clips: refused by _convert_split
        return _Plan(clips, digest, versions, convert=clips)
    if (entry.get("clips_digest") == digest
            and entry.get("versions_digest") == versions_digest(versions)):
        return _Plan(clips, digest, versions, convert=[], up_to_date=True)
    stored = stored_clips(cfg.out, split)
    have = dict(zip(stored.column("fname").to_pylist(), stored.column("labels").to_pylist(),
                    strict=True))
    listed = {c.fname: c for c in clips}
    _refuse_relabelled(cfg.out, split, have, listed)
    # Format 1 is rebuilt whole, so all its rows share one format; a split without versions
    # too, since any of its clips may have been replaced since.
    if not entry.get("clip_stats") or not entry.get("versions_digest"):
        return _Plan(clips, digest, versions, convert=clips)
    stored_versions = zip(stored.column("fname").to_pylist(),
                          stored.column("version").to_pylist(), strict=True)
    changed = {f for f, v in stored_versions if f in listed and v != versions[f]}
    errors = stored_errors(cfg.out, split)
    failed = sorted((f, reason) for f, (reason, v) in errors.items()
                    if f in listed and v == versions[f])
    unchanged = {f for f, _ in failed}
    # Converted: new clips, clips whose file changed, earlier failures whose file changed.
    convert = [c for c in clips
               if c.fname in changed or (c.fname not in have and c.fname not in unchanged)]
    removed = sorted(set(have) - set(listed))
    up_to_date = not convert and not removed and len(failed) == len(errors)
    return _Plan(clips, digest, versions, convert, stored, removed, changed | set(removed),
                 failed, up_to_date)


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


def _record_digests(out: str, manifest: dict, split: str, plan: _Plan) -> None:
    """Write the digests of an unchanged split into the manifest (stores from before digests)."""
    entry = manifest["splits"][split]
    digests = {"clips_digest": plan.digest, "versions_digest": versions_digest(plan.versions)}
    if any(entry.get(key) != value for key, value in digests.items()):
        entry.update(digests)
        storage.write_json(storage.join(out, MANIFEST), manifest)


def _convert_split(
    cfg: PreprocessConfig, manifest: dict, split: str, plan: _Plan, workers: int
) -> SplitResult:
    """Convert a split's new clips into a staging folder with Ray Data, then commit it with the
    rows it keeps; NothingConvertedError, and nothing committed, when no row would be left."""
    if not plan.clips:  # a header and no rows: an empty split is no success (README)
        raise NothingConvertedError(f"{split}: {split_source(cfg.data, split)} lists no clips; "
                                    "nothing committed")
    staged = storage.join(cfg.out, STAGING, f"{split}-{uuid.uuid4().hex[:8]}")
    try:
        return _convert_and_commit(cfg, manifest, split, plan, workers, staged)
    except BaseException:  # a failed conversion (a full disk, Ctrl-C) leaves no staged parts
        with contextlib.suppress(OSError, storage.StorageError):
            storage.remove_tree(staged)
        raise


def _convert_and_commit(cfg: PreprocessConfig, manifest: dict, split: str, plan: _Plan,
                        workers: int, staged: str) -> SplitResult:
    """_convert_split's work, its new parts written under the staging folder staged."""
    start = time.perf_counter()
    reports = _convert_clips(cfg, split, plan.convert, plan.versions, staged, workers)
    new_parts = [r for r in reports if r["kind"] == "part"]
    new_errors = [(r["name"], r["reason"]) for r in reports if r["kind"] == "error"]
    converted = sum(r["rows"] for r in new_parts)
    if converted + len(new_errors) != len(plan.convert):  # every clip lands once, or a bug
        raise RuntimeError(f"{split}: {len(plan.convert)} clips in, "
                           f"{converted + len(new_errors)} out")
    errors = sorted(new_errors + plan.failed)
    keep, kept_parts = _kept_parts(cfg.out, split, plan, staged)
    parts = sorted(new_parts + kept_parts, key=lambda r: r["name"])
    rows = sum(r["rows"] for r in parts)
    if rows == 0 and plan.clips:
        fname, reason = errors[0]
        raise NothingConvertedError(
            f"{split}: none of its {len(plan.clips)} clips converted (first: {fname}: {reason}); "
            "nothing committed")
    write_errors(storage.join(staged, ERRORS_FILE), errors, plan.versions)
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
        versions_digest=versions_digest(plan.versions),
    )
    commit_split(cfg.out, manifest, staged, info, keep=keep)
    return SplitResult(
        split,
        converted=converted,
        failed=len(new_errors),
        failed_before=len(plan.failed),
        removed=len(plan.removed),
        kept=rows - converted if plan.stored is not None else None,
        audio_seconds=sum(r["audio_seconds"] for r in new_parts),
        bytes=info.bytes,
        wall_seconds=info.wall_seconds,
        errors_uri=storage.join(cfg.out, split, ERRORS_FILE),
    )


def _convert_clips(cfg: PreprocessConfig, split: str, clips: list[Clip],
                   versions: dict[str, str], staged: str, workers: int) -> list[dict]:
    """Ray Data over the clips: Parquet parts written under staged; one report per part and
    per failed clip."""
    if not clips:
        return []
    # Each row records its file's version as listed before this run read it: a file replaced
    # meanwhile has another version by the next run, which converts it again.
    items = [{"fname": c.fname, "labels": list(c.labels), "uri": c.uri,
              "version": versions[c.fname]} for c in clips]
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
    holding rows that go (removed or reconverted clips) are rewritten without them into staged."""
    if plan.stored is None:
        return [], []
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(plan.stored.column("file").to_pylist()):
        by_file[name].append(i)
    keep, reports = [], []
    for name, indices in sorted(by_file.items()):
        rows = plan.stored.take(indices)
        if plan.drop.isdisjoint(rows.column("fname").to_pylist()):
            keep.append(name)
            size = storage.file_size(storage.join(out, split, name))
        else:
            rewritten = rewrite_part(storage.join(out, split, name), staged, plan.drop)
            if rewritten is None:  # every row of this part goes
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
    reports = []
    for clip in batch.to_pylist():
        row = clip_row(clip["uri"], clip["fname"], mel)
        if row["error"]:
            reports.append(_report("error", clip["fname"], reason=row["error"]))
            continue
        row.update(labels=list(clip["labels"]), version=clip["version"])
        for name in ROW_SCHEMA.names:
            rows[name].append(row[name])
    if rows["fname"]:
        name = part_name(rows["fname"])
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
