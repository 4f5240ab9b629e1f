"""What a preprocessing run does to each split: nothing, an update in place, or a whole build;
and the refusals made before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from fatlib.core.errors import redact
from fatlib.io import files, storage
from fatlib.io.dataset import Clip, clips_digest, versions_digest
from fatlib.io.feature_store import (
    MANIFEST,
    FeatureStore,
    FeatureStoreError,
    new_manifest,
    read_manifest,
)
from fatlib.io.store_commits import discard_store
from fatlib.stages.preprocess.config import PreprocessConfig


@dataclass
class Plan:
    """What this run does to one split."""

    clips: list[Clip]  # every clip the split lists now
    digest: str  # io.dataset.clips_digest(clips)
    versions: dict[str, str]  # fname -> its file's version now, "" when no regular file
    convert: list[Clip]  # the clips decoded in this run
    stored: pa.Table | None = None  # the committed rows (io.feature_store.FeatureStore.clips),
    # when the split is updated in place rather than rebuilt
    removed: list[str] = field(default_factory=list)  # stored fnames the split no longer lists
    drop: set[str] = field(default_factory=set)  # stored rows that go: removed or reconverted
    failed: list[tuple[str, str]] = field(default_factory=list)  # (fname, reason) of stored
    # failures whose file has not changed since: kept, not retried
    up_to_date: bool = False



def open_manifest(cfg: PreprocessConfig, classes: list[str]) -> dict:
    """The store's manifest if compatible; refusal, or a clean slate with overwrite."""
    manifest = read_manifest(cfg.out)
    if manifest is None:
        return new_manifest(cfg.mel, classes, cfg.data)
    conflict = _conflict(cfg, manifest, classes)
    if conflict is None:
        return manifest
    if not cfg.overwrite:
        raise conflict
    fresh = new_manifest(cfg.mel, classes, cfg.data)
    discard_store(cfg.out, manifest, fresh)  # the old store's own files, nothing else
    return fresh


def _conflict(cfg: PreprocessConfig, manifest: dict, classes: list[str]
              ) -> FeatureStoreError | None:
    """Why the store cannot take this run's features unless overwritten; None when it can."""
    try:
        store = FeatureStore(cfg.out, manifest)
    except FeatureStoreError as e:  # a format this fatlib no longer reads
        return e
    if store.fingerprint != cfg.mel.fingerprint:
        conflict = (f"holds features with mel fingerprint {store.fingerprint}, "
                    f"this configuration has {cfg.mel.fingerprint} "
                    f"({store.mel_differences(cfg.mel)})")
    elif store.classes != classes:
        conflict = "holds features of a dataset with another class vocabulary"
    else:
        return None
    return FeatureStoreError(f"{cfg.out} {conflict}; refusing to mix (use overwrite)")


def store_root(cfg: PreprocessConfig) -> str:
    """cfg.out, once checked to be neither the dataset, nor inside it, nor around it: a store
    there could replace the dataset's files (FeatureStoreError, before anything is written)."""
    data, out = storage.absolute(cfg.data), storage.absolute(cfg.out)
    inside, around = files.contains(data, out), files.contains(out, data)
    if inside or around:
        where = ("is the dataset" if inside and around else "lies inside the dataset" if inside
                 else "contains the dataset")
        raise FeatureStoreError(redact(f"{out}: the feature store {where} {data}; choose an "
                                       "out location outside the dataset"))
    return cfg.out


def plan_split(cfg: PreprocessConfig, store: FeatureStore, split: str, clips: list[Clip]
               ) -> Plan:
    """Whole conversion, nothing, or the update that brings a committed split up to date with
    its CSV and its audio files (one listing of the split's folder, no audio read).

    Splits committed before digests existed are compared by the rows they actually hold;
    splits without file versions are rebuilt, never trusted.
    """
    digest = clips_digest(clips)
    on_disk = files.file_versions(storage.join(cfg.data, split))
    versions = {c.fname: on_disk.get(c.fname, "") for c in clips}
    # No clips: refused by convert._convert_split.
    if split not in store.splits or cfg.overwrite or not clips:
        return Plan(clips, digest, versions, convert=clips)
    info = store.split(split)
    if info.clips_digest == digest and info.versions_digest == versions_digest(versions):
        return Plan(clips, digest, versions, convert=[], up_to_date=True)
    stored = store.clips(split)
    have = dict(zip(stored.column("fname").to_pylist(), stored.column("labels").to_pylist(),
                    strict=True))
    listed = {c.fname: c for c in clips}
    _refuse_relabelled(cfg.out, split, have, listed)
    # A split without versions is rebuilt whole: any of its clips may have been replaced since.
    if not info.versions_digest:
        return Plan(clips, digest, versions, convert=clips)
    stored_versions = zip(stored.column("fname").to_pylist(),
                          stored.column("version").to_pylist(), strict=True)
    changed = {f for f, v in stored_versions if f in listed and v != versions[f]}
    errors = store.errors(split)
    failed = sorted((f, reason) for f, (reason, v) in errors.items()
                    if f in listed and v == versions[f])
    unchanged = {f for f, _ in failed}
    # Converted: new clips, clips whose file changed, earlier failures whose file changed.
    convert = [c for c in clips
               if c.fname in changed or (c.fname not in have and c.fname not in unchanged)]
    removed = sorted(set(have) - set(listed))
    up_to_date = not convert and not removed and len(failed) == len(errors)
    return Plan(clips, digest, versions, convert, stored, removed, changed | set(removed),
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


def record_digests(out: str, manifest: dict, split: str, plan: Plan) -> None:
    """Write the digests of an unchanged split into the manifest (stores from before digests)."""
    entry = manifest["splits"][split]
    digests = {"clips_digest": plan.digest, "versions_digest": versions_digest(plan.versions)}
    if any(entry.get(key) != value for key, value in digests.items()):
        entry.update(digests)
        storage.write_json(storage.join(out, MANIFEST), manifest)
