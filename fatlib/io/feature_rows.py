"""The feature store's Parquet files: the row and errors schemas, each file's metadata,
writing parts and errors tables, and rows as the numpy column batches training and scoring take.

Which files make a split is the manifest's business (io.feature_store); this module writes and
reads the files themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fatlib import __version__
from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS
from fatlib.io import storage

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
