"""The Parquet feature store as its manifest lists it: the committed splits, their files, rows
and errors, the class vocabulary and the MelConfig the features were computed with.

Layout: <root>/<split>/part-*.parquet, <root>/<split>/_errors.parquet, <root>/_MANIFEST.json.
A split exists for readers only once the manifest lists it, with its exact files: a job killed
while writing or committing leaves nothing half-visible (docs/ARCHITECTURE.md, "Contracts").
The files themselves: io.feature_rows; publishing a split: io.store_commits.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping, Set
from dataclasses import dataclass, fields

import pyarrow as pa
import pyarrow.fs as pafs

from fatlib import __version__
from fatlib.core.config import MelConfig
from fatlib.core.errors import UserError
from fatlib.io import storage
from fatlib.io.feature_rows import ROW_SCHEMA

MANIFEST = "_MANIFEST.json"
ERRORS_FILE = "_errors.parquet"
# 2: rows carry the clip's dB statistics (core.features.CLIP_STATS). Stores of format 1 are
# refused, with the command that rebuilds them.
STORE_FORMAT = 2


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


# The manifest keys of a split entry that SplitInfo holds.
_RECORDED = [f.name for f in fields(SplitInfo) if f.name != "name"]


class FeatureStore:
    """A feature store's committed splits as its manifest lists them, read once."""

    __slots__ = ("root", "_manifest")

    def __init__(self, root: str, manifest: Mapping) -> None:
        """The store at root that manifest (its _MANIFEST.json) describes; refuses old formats."""
        if (manifest.get("format") or 1) < STORE_FORMAT:
            raise FeatureStoreError(_outdated(root, manifest))
        self.root = root
        # A snapshot: preprocessing goes on changing its own copy as it commits splits.
        self._manifest = copy.deepcopy(dict(manifest))

    @classmethod
    def open(cls, root: str, mel: MelConfig | None = None) -> FeatureStore:
        """The store at root; FeatureStoreError when there is none, it is of an older format,
        or (given mel) its features were computed with another MelConfig."""
        store = cls.find(root, mel)
        if store is None:
            raise FeatureStoreError(f"{root}: no feature store here ({MANIFEST} missing)")
        return store

    @classmethod
    def find(cls, root: str, mel: MelConfig | None = None) -> FeatureStore | None:
        """The store at root, or None when root holds no manifest; refusals as open's."""
        manifest = read_manifest(root)
        if manifest is None:
            return None
        store = cls(root, manifest)
        if mel is not None:
            store.require_mel(mel)
        return store

    @property
    def classes(self) -> list[str]:
        """The class vocabulary of the dataset the store was built from, in its order."""
        return list(self._manifest["classes"])

    @property
    def fingerprint(self) -> str:
        """The mel fingerprint of the stored features (core.config.MelConfig.fingerprint)."""
        return self._manifest["fingerprint"]

    @property
    def splits(self) -> list[str]:
        """Names of the committed splits."""
        return list(self._manifest["splits"])

    def has(self, split: str) -> bool:
        """Whether the split is committed with at least one clip."""
        return self._manifest["splits"].get(split, {}).get("rows", 0) > 0

    def split(self, name: str) -> SplitInfo:
        """What the manifest records of a committed split; FeatureStoreError naming the
        committed splits when it is not one of them."""
        entry = self._manifest["splits"].get(name)
        if entry is None:
            have = ", ".join(self._manifest["splits"]) or "none"
            raise FeatureStoreError(
                f"{self.root}: split {name!r} not preprocessed (committed: {have})")
        return SplitInfo(name, **{key: entry[key] for key in _RECORDED if key in entry})

    def files(self, split: str) -> list[str]:
        """URIs of a committed split's Parquet files."""
        return [storage.join(self.root, split, f) for f in self.split(split).files]

    def paths(self, split: str, parts: Set[str] | None = None
              ) -> tuple[pafs.FileSystem, list[str]]:
        """(filesystem, paths inside it) of a committed split's files (of only those whose
        names are in parts, when given), for readers such as Ray Data's read_parquet that take
        a filesystem and plain paths."""
        files = self.files(split)
        fs, _ = storage.resolve(files[0])
        return fs, [storage.resolve(f)[1] for f in files
                    if parts is None or posixpath.basename(f) in parts]

    def table(self, split: str, columns: list[str] | None = None) -> pa.Table:
        """A committed split (or some of its columns) as one Arrow table, read on the caller."""
        # Fine for label columns or small splits; stages stream log-mels through Ray Data.
        tables = [storage.read_parquet(uri, columns) for uri in self.files(split)]
        schema = ROW_SCHEMA if columns is None else pa.schema([ROW_SCHEMA.field(c)
                                                               for c in columns])
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def clips(self, split: str) -> pa.Table:
        """fname, labels, n_frames, seconds, version ("" in files written before versions) and
        `file` (its part's name) of every row of a committed split; the log-mels are not read."""
        columns = ["fname", "labels", "n_frames", "seconds", "version"]
        tables = []
        for uri in self.files(split):
            table = storage.read_parquet(uri, columns, if_present=True)  # no log-mel read
            if "version" not in table.column_names:
                table = table.append_column("version", pa.array([""] * len(table), pa.string()))
            name = posixpath.basename(uri)
            tables.append(table.append_column("file", pa.array([name] * len(table),
                                                               pa.string())))
        schema = pa.schema([ROW_SCHEMA.field(c) for c in columns] + [("file", pa.string())])
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def errors(self, split: str) -> dict[str, tuple[str, str]]:
        """fname -> (reason, file version) of a committed split's errors table ("" for a
        version not recorded)."""
        uri = storage.join(self.root, split, ERRORS_FILE)
        if not storage.is_file(uri):
            return {}
        rows = storage.read_parquet(uri).to_pylist()
        return {row["fname"]: (row["reason"], row.get("version") or "") for row in rows}

    def require_mel(self, mel: MelConfig) -> None:
        """FeatureStoreError naming both fingerprints and the MelConfig fields that differ when
        the store was built with another config."""
        if self.fingerprint != mel.fingerprint:
            raise FeatureStoreError(
                f"{self.root}: features have mel fingerprint {self.fingerprint}, "
                f"the configuration expects {mel.fingerprint} ({self.mel_differences(mel)}); "
                "rebuild the store with jobs/preprocess.py and this configuration, or use the "
                "MelConfig the store was built with"
            )

    def mel_differences(self, mel: MelConfig) -> str:
        """Which MelConfig fields the store and mel disagree on, with both values."""
        stored = self._manifest.get("mel_config") or {}
        changed = [f"{name} {stored.get(name)!r} in the store, {value!r} expected"
                   for name, value in mel.to_dict().items() if stored.get(name) != value]
        if changed:
            return "differs in " + "; ".join(changed)
        # Equal parameters and another fingerprint: the feature algorithm itself changed.
        return "same mel parameters, computed by another version of the feature algorithm"


def read_manifest(root: str) -> dict | None:
    """The store's manifest as written (for its writers), or None when root holds no store."""
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


def _outdated(root: str, manifest: Mapping) -> str:
    """The one line refusing a store of an older format, with the command that rebuilds it."""
    source = manifest.get("source") or "DATASET"
    return (f"{root}: feature store of format {manifest.get('format') or 1}, from before "
            "per-clip dB statistics, which this fatlib no longer reads; rebuild it with "
            f"python jobs/preprocess.py --data {source} --out {root} --overwrite")
