"""The Parquet feature store: row format, per-file metadata, the manifest and split commits.

Layout: <root>/<split>/part-*.parquet, <root>/<split>/_errors.parquet, <root>/_MANIFEST.json.
A split exists for readers only once the manifest lists it, with its exact files: a job killed
while writing or committing leaves nothing half-visible (docs/ARCHITECTURE.md, "Contracts").
The store deletes only files it wrote: those its manifest lists (or recorded before a commit
that did not finish), never anything else found in its folders.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fatlib import __version__
from fatlib.core.config import MelConfig
from fatlib.core.errors import UserError
from fatlib.core.features import CLIP_STATS
from fatlib.io import storage

MANIFEST = "_MANIFEST.json"
ERRORS_FILE = "_errors.parquet"
# 2: rows carry the clip's dB statistics (CLIP_STATS). Format-1 stores still load: readers
# compute the statistics from the log-mel when the columns are missing.
STORE_FORMAT = 2

# One row per converted clip. The log-mel is float16 dB, C-order (n_mels, n_frames), as raw
# little-endian bytes (fatlib.core.features.encode_logmel): readable by any Parquet tool, no
# ragged-tensor extension type needed.
ROW_SCHEMA = pa.schema(
    [
        ("fname", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("n_frames", pa.int32()),
        ("seconds", pa.float32()),  # decoded clip length before trimming and padding
        ("logmel", pa.binary()),
        *[(name, pa.float32()) for name in CLIP_STATS],  # of the stored float16 log-mel
        # The audio file's version when it was listed for conversion ("size:mtime_ns",
        # io.files.file_versions; "" unknown): a re-run converts the clip again once it changes.
        ("version", pa.string()),
    ]
)
# A clip that failed, and the version of its file that failed: retried once that changes.
ERROR_SCHEMA = pa.schema([("fname", pa.string()), ("reason", pa.string()),
                          ("version", pa.string())])


class FeatureStoreError(UserError):
    """Features are missing, incomplete, or were computed with another configuration."""


@dataclass(frozen=True)
class SplitInfo:
    """What the manifest records of one committed split."""

    name: str
    files: list[str]
    rows: int
    errors: int
    audio_seconds: float
    frames: int
    bytes: int
    wall_seconds: float
    clips_digest: str | None = None  # io.dataset.clips_digest of the rows it was built from
    versions_digest: str | None = None  # io.dataset.versions_digest of its clips' files


def file_metadata(cfg: MelConfig, split: str) -> dict[bytes, bytes]:
    """Parquet schema metadata carried by every feature file."""
    return {
        b"fatlib.fingerprint": cfg.fingerprint.encode(),
        b"fatlib.mel_config": json.dumps(cfg.to_dict(), sort_keys=True).encode(),
        b"fatlib.split": split.encode(),
        b"fatlib.version": __version__.encode(),
    }


def write_rows(uri: str, columns: dict[str, list], cfg: MelConfig, split: str) -> int:
    """Write feature rows (column lists named as ROW_SCHEMA's) as one Parquet file; its size."""
    # Rows not converted from an audio file (a synthetic store) have no file version.
    columns = {"version": [""] * len(columns["fname"]), **columns}
    table = pa.table(columns, schema=ROW_SCHEMA.with_metadata(file_metadata(cfg, split)))
    # Dictionary encoding only helps the label column; the log-mel bytes do not compress well.
    return storage.write_parquet(uri, table, compression="zstd", use_dictionary=["labels"])


def part_name(fnames: list[str]) -> str:
    """File name of a Parquet part holding these clips, in this order."""
    # Named by content, so a retried task overwrites its own part instead of adding one.
    digest = hashlib.sha1("\n".join(fnames).encode()).hexdigest()[:16]
    return f"part-{digest}.parquet"


def write_errors(uri: str, errors: list[tuple[str, str]],
                 versions: Mapping[str, str] | None = None) -> None:
    """Write the errors table of a split: (fname, reason) and the failed file's version from
    versions ("" when unknown)."""
    fnames, reasons = zip(*errors, strict=True) if errors else ((), ())
    table = pa.table({"fname": list(fnames), "reason": list(reasons),
                      "version": [(versions or {}).get(f, "") for f in fnames]},
                     schema=ERROR_SCHEMA)
    storage.write_parquet(uri, table)


def read_manifest(root: str) -> dict | None:
    """The store's manifest, or None when root holds no feature store."""
    path = storage.join(root, MANIFEST)
    return storage.read_json(path) if storage.is_file(path) else None


def new_manifest(cfg: MelConfig, classes: list[str], source: str) -> dict:
    """An empty manifest for features of cfg over a dataset with this class vocabulary."""
    return {
        "format": STORE_FORMAT,
        "fingerprint": cfg.fingerprint,
        "mel_config": cfg.to_dict(),
        "classes": list(classes),
        "source": source,
        "fatlib_version": __version__,
        "splits": {},
    }


def stored_clips(root: str, split: str) -> pa.Table:
    """fname, labels, n_frames, seconds, version ("" in files written before versions) and
    `file` (its part's name) of every row of a committed split; the log-mels are not read."""
    columns = ["fname", "labels", "n_frames", "seconds", "version"]
    tables = []
    for uri in split_files(root, split):
        fs, path = storage.resolve(uri)
        present = set(pq.read_schema(path, filesystem=fs).names)
        table = pq.read_table(path, filesystem=fs,  # only these columns' bytes
                              columns=[c for c in columns if c in present])
        if "version" not in present:
            table = table.append_column("version", pa.array([""] * len(table), pa.string()))
        name = posixpath.basename(path)
        tables.append(table.append_column("file", pa.array([name] * len(table), pa.string())))
    schema = pa.schema([ROW_SCHEMA.field(c) for c in columns] + [("file", pa.string())])
    return pa.concat_tables(tables) if tables else schema.empty_table()


def stored_errors(root: str, split: str) -> dict[str, tuple[str, str]]:
    """fname -> (reason, file version) of a committed split's errors table ("" for a version
    not recorded)."""
    uri = storage.join(root, split, ERRORS_FILE)
    if not storage.is_file(uri):
        return {}
    rows = storage.read_parquet(uri).to_pylist()
    return {row["fname"]: (row["reason"], row.get("version") or "") for row in rows}


def rewrite_part(uri: str, staged: str, drop: Collection[str]) -> tuple[str, pa.Table] | None:
    """Copy a part without the rows of `drop` into the folder staged, under its content name;
    (that name, the copied rows' fname, n_frames and seconds), or None when no row is left."""
    table = storage.read_parquet(uri)
    kept = table.filter(pc.invert(pc.is_in(table.column("fname"), pa.array(list(drop),
                                                                            pa.string()))))
    if len(kept) == 0:
        return None
    name = part_name(kept.column("fname").to_pylist())
    # The file's schema metadata (fingerprint, MelConfig, split) travels with the table.
    storage.write_parquet(storage.join(staged, name), kept, compression="zstd",
                          use_dictionary=["labels"])
    return name, kept.select(["fname", "n_frames", "seconds"])


def split_files(root: str, split: str, cfg: MelConfig | None = None) -> list[str]:
    """URIs of a committed split's Parquet files; refuses another MelConfig's features."""
    manifest = read_manifest(root)
    if manifest is None:
        raise FeatureStoreError(f"{root}: no feature store here ({MANIFEST} missing)")
    if cfg is not None:
        require_fingerprint(manifest, cfg, root)
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise FeatureStoreError(f"{root}: split {split!r} not preprocessed (committed: {have})")
    return [storage.join(root, split, f) for f in manifest["splits"][split]["files"]]


def split_paths(root: str, split: str, cfg: MelConfig | None = None
                ) -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, paths inside it) of a committed split's files, for readers such as Ray
    Data's read_parquet that take a filesystem and plain paths."""
    files = split_files(root, split, cfg)
    fs, _ = storage.resolve(files[0])
    return fs, [storage.resolve(f)[1] for f in files]


def feature_columns(table: pa.Table, weight: float = 1.0) -> dict[str, np.ndarray]:
    """Feature rows as the numpy column batch training and scoring take (as Ray Data hands
    them over): object arrays for names, label lists and log-mel bytes, plus a loss weight."""
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if pa.types.is_floating(table.schema.field(name).type):
            columns[name] = np.asarray(values, dtype=np.float32)
        elif pa.types.is_integer(table.schema.field(name).type):
            columns[name] = np.asarray(values, dtype=np.int64)
        else:  # element by element, so equal-length label lists stay lists
            columns[name] = np.empty(len(values), dtype=object)
            for i, value in enumerate(values):
                columns[name][i] = value
    columns["weight"] = np.full(table.num_rows, weight, dtype=np.float32)
    return columns


def has_split(root: str, split: str) -> bool:
    """Whether the store holds this split, committed, with at least one clip."""
    manifest = read_manifest(root) or {"splits": {}}
    return manifest["splits"].get(split, {}).get("rows", 0) > 0


def has_clip_stats(root: str, split: str) -> bool:
    """Whether a committed split's rows carry the CLIP_STATS columns (written since format 2)."""
    manifest = read_manifest(root) or {"splits": {}}
    return bool(manifest["splits"].get(split, {}).get("clip_stats", False))


def require_fingerprint(manifest: dict, cfg: MelConfig, root: str) -> None:
    """FeatureStoreError naming both fingerprints and the MelConfig fields that differ when the
    store was built with another config."""
    if manifest["fingerprint"] != cfg.fingerprint:
        raise FeatureStoreError(
            f"{root}: features have mel fingerprint {manifest['fingerprint']}, "
            f"the configuration expects {cfg.fingerprint} ({mel_differences(manifest, cfg)}); "
            "rebuild the store with jobs/preprocess.py and this configuration, or use the "
            "MelConfig the store was built with"
        )


def mel_differences(manifest: dict, cfg: MelConfig) -> str:
    """Which MelConfig fields a store's manifest and cfg disagree on, with both values."""
    stored = manifest.get("mel_config") or {}
    expected = cfg.to_dict()
    changed = [f"{name} {stored.get(name)!r} in the store, {value!r} expected"
               for name, value in expected.items() if stored.get(name) != value]
    if changed:
        return "differs in " + "; ".join(changed)
    # Equal parameters and another fingerprint: the feature algorithm itself changed.
    return "same mel parameters, computed by another version of the feature algorithm"


def read_split_table(
    root: str, split: str, cfg: MelConfig | None = None, columns: list[str] | None = None
) -> pa.Table:
    """A committed split (or some of its columns) as one Arrow table, read on the caller.

    Fine for label columns or small splits; stages stream log-mels through Ray Data instead.
    """
    files = split_files(root, split, cfg)
    tables = [storage.read_parquet(uri, columns) for uri in files]
    schema = ROW_SCHEMA if columns is None else pa.schema([ROW_SCHEMA.field(c) for c in columns])
    return pa.concat_tables(tables) if tables else schema.empty_table()
