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
from dataclasses import replace

import pyarrow as pa
import ray.data
import torch

from fatlib.core.bounds import check_bounds
from fatlib.core.config import MelConfig
from fatlib.io import storage
from fatlib.io.clips import clip_row
from fatlib.io.dataset import (
    Clip,
    available_splits,
    class_vocabulary,
    read_split,
    require_dataset,
    split_source,
    versions_digest,
)
from fatlib.io.feature_rows import ROW_SCHEMA, part_name, rewrite_part, write_errors, write_rows
from fatlib.io.feature_store import ERRORS_FILE, FeatureStore, FeatureStoreError, SplitInfo
from fatlib.io.locks import holding
from fatlib.io.store_commits import commit_split
from fatlib.stages.preprocess.config import PreprocessConfig, PreprocessResult, SplitResult
from fatlib.stages.preprocess.plan import (
    Plan,
    open_manifest,
    plan_split,
    record_digests,
    store_root,
)
from fatlib.stages.runtime import (
    cluster_cpus,
    ensure_ray,
    require_resources,
    without_op_reservation,
)

STAGING = "_staging"


class NothingConvertedError(FeatureStoreError):
    """Every clip of a split failed: the split is not committed."""


@holding("preprocess", lambda cfg: store_root(cfg))  # before anything is read or written
def preprocess(cfg: PreprocessConfig) -> PreprocessResult:
    """Convert the requested splits: new ones whole, changed ones by their new and removed clips,
    unchanged ones not at all; NothingConvertedError for splits where every clip failed."""
    check_bounds(cfg)  # a config built in code gets the checks its flags get
    cfg = replace(cfg, data=storage.absolute(cfg.data), out=storage.absolute(cfg.out))
    require_dataset(cfg.data)
    splits = list(cfg.splits) or available_splits(cfg.data)
    if not splits:
        raise FeatureStoreError(f"{cfg.data}: no train_curated.csv, train_noisy.csv or test/")
    classes = class_vocabulary(cfg.data)
    # Every manifest is validated, and every refusal made, before anything is written.
    clips = {split: read_split(cfg.data, split, classes) for split in splits}
    manifest = open_manifest(cfg, classes)
    store = FeatureStore(cfg.out, manifest)  # as found: the commits below change manifest
    plans = {split: plan_split(cfg, store, split, clips[split]) for split in splits}
    workers = 0
    if any(plan.convert for plan in plans.values()):
        ensure_ray()
        require_resources([{"CPU": 1.0, **({cfg.node_resource: 1.0} if cfg.node_resource
                                           else {})}], "preprocessing", cfg.wait_for_resources)
        workers = cfg.workers or cluster_cpus()
    results, failures = [], []
    for split in splits:
        if plans[split].up_to_date:
            record_digests(cfg.out, manifest, split, plans[split])
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


def _convert_split(
    cfg: PreprocessConfig, manifest: dict, split: str, plan: Plan, workers: int
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


def _convert_and_commit(cfg: PreprocessConfig, manifest: dict, split: str, plan: Plan,
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
    # This pipeline has one real operator: nothing to reserve CPUs for.
    ds = without_op_reservation(ray.data.from_items(items, override_num_blocks=n_blocks))
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


def _kept_parts(out: str, split: str, plan: Plan, staged: str) -> tuple[list[str], list[dict]]:
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
