"""FAT2019's Kaggle layout, read and validated: which clips a split holds and their labels.

A dataset root (local or s3://) holds train_curated.csv / train_noisy.csv (fname,labels),
sample_submission.csv (fname + one column per class) and one audio folder per split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from fatlib.core.errors import UserError, redact
from fatlib.core.labels import LabelError, parse_labels, vocabulary
from fatlib.io import storage

SPLITS = ("train_curated", "train_noisy", "test")
LABELLED_SPLITS = ("train_curated", "train_noisy")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SUBMISSION_CSV = "sample_submission.csv"
TRUTH_CSV = "test_truth.csv"  # optional: the test clips' labels (fname,labels), for scoring


class ManifestError(UserError):
    """A dataset manifest (CSV) is unusable; the message names the file and the row."""


@dataclass(frozen=True)
class Clip:
    """One clip of a split: its file name, labels (empty for test) and full location."""

    fname: str
    labels: tuple[str, ...]
    uri: str


def require_dataset(data_uri: str) -> None:
    """ManifestError unless data_uri is an existing directory (or a non-empty s3:// prefix)."""
    try:
        found = storage.exists(data_uri)
    except OSError as e:  # an unreachable bucket or a refused listing
        raise ManifestError(redact(f"{data_uri}: dataset path cannot be read ({e})")) from None
    if not found:
        raise ManifestError(f"{data_uri}: dataset path does not exist")
    if storage.is_file(data_uri):
        raise ManifestError(f"{data_uri}: dataset path is a file; expected a directory in the "
                            "Kaggle layout")


def clips_digest(clips: Iterable[Clip]) -> str:
    """SHA-256 of a split's (fname, labels) rows, independent of row and label order."""
    # Sorted so that reordering the CSV or a clip's labels is no change; JSON so that no
    # character inside a name can make two different row sets print alike.
    rows = sorted((c.fname, sorted(c.labels)) for c in clips)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def versions_digest(versions: Mapping[str, str]) -> str:
    """SHA-256 of a split's fname -> file version pairs (io.files.file_versions; "" for a
    clip with no regular file), independent of order."""
    return hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()


def split_source(data_uri: str, split: str) -> str:
    """Where a split's clips are listed: its CSV, or a test split's audio folder when there is
    no sample_submission.csv."""
    if split != "test":
        return storage.join(data_uri, f"{split}.csv")
    csv_uri = storage.join(data_uri, SUBMISSION_CSV)
    return csv_uri if storage.is_file(csv_uri) else storage.join(data_uri, "test")


def available_splits(data_uri: str) -> list[str]:
    """The splits this dataset has: a CSV for the training splits, a CSV or a folder for test,
    unless the CSV lists no clip and the folder holds no file (synthetic datasets write such
    empty splits; a CSV without rows beside audio files is a split, refused by preprocessing)."""
    found = []
    for split in SPLITS:
        listing = split_source(data_uri, split)
        if storage.exists(listing) and (storage.list_files(storage.join(data_uri, split))
                                        or _lists_a_row(listing)):
            found.append(split)
    return found


def class_vocabulary(data_uri: str) -> list[str]:
    """sample_submission.csv's class columns when present, else the sorted union of labels."""
    submission = storage.join(data_uri, SUBMISSION_CSV)
    if storage.is_file(submission):
        table = _read_csv(submission, SUBMISSION_CSV)
        _require_columns(table, ["fname"], SUBMISSION_CSV)
        try:
            return vocabulary(list(table.columns))
        except LabelError as e:
            raise ManifestError(f"{SUBMISSION_CSV}: {e}") from None
    label_lists = []
    for split in LABELLED_SPLITS:
        path = storage.join(data_uri, f"{split}.csv")
        if storage.is_file(path):
            label_lists += [parse_labels(v) for v in _read_csv(path, f"{split}.csv")["labels"]]
    try:
        return vocabulary(None, label_lists)
    except LabelError as e:
        raise ManifestError(f"{data_uri}: {e}") from None


def read_split(data_uri: str, split: str, classes: list[str]) -> list[Clip]:
    """The clips of a split, validated: columns, unique and safe names, known labels."""
    if split not in SPLITS:
        raise ManifestError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    folder = storage.join(data_uri, split)
    if split == "test":
        csv_path = storage.join(data_uri, SUBMISSION_CSV)
        if not storage.is_file(csv_path):
            return list_audio(folder)
        csv_name, table = SUBMISSION_CSV, _read_csv(csv_path, SUBMISSION_CSV)
        _require_columns(table, ["fname"], csv_name)
        label_fields = [""] * len(table)
    else:
        csv_name = f"{split}.csv"
        csv_path = storage.join(data_uri, csv_name)
        if not storage.is_file(csv_path):
            raise ManifestError(f"{csv_name}: not found in {data_uri}")
        table = _read_csv(csv_path, csv_name)
        _require_columns(table, ["fname", "labels"], csv_name)
        label_fields = list(table["labels"])
    known, seen, clips = set(classes), {}, []
    for row, (fname, field) in enumerate(zip(table["fname"], label_fields, strict=True)):
        where = f"{csv_name} line {row + 2}"  # line 1 is the header
        _check_safe_name(fname, where)
        if fname in seen:
            raise ManifestError(f"{where}: duplicate fname {fname!r} (first on line {seen[fname]})")
        seen[fname] = row + 2
        labels = tuple(parse_labels(field))
        if split != "test" and not labels:
            raise ManifestError(f"{where}: {fname} has no label")
        unknown = [name for name in labels if name not in known]
        if unknown:
            raise ManifestError(f"{where}: label {unknown[0]!r} of {fname} is not in the "
                                f"class vocabulary ({len(classes)} classes)")
        clips.append(Clip(fname, labels, storage.join(folder, fname)))
    return clips


def list_audio(folder: str) -> list[Clip]:
    """Every audio file directly in a folder, as unlabelled clips sorted by name."""
    names = [n for n in storage.list_files(folder) if n.lower().endswith(AUDIO_SUFFIXES)]
    return [Clip(n, (), storage.join(folder, n)) for n in names]


def read_truth(csv_uri: str) -> dict[str, list[str]] | None:
    """Test labels (fname -> class names) from a fname,labels CSV such as a dataset's
    test_truth.csv; None when there is no such file."""
    if not storage.is_file(csv_uri):
        return None
    name = csv_uri.rsplit("/", 1)[-1]
    table = _read_csv(csv_uri, name)
    _require_columns(table, ["fname", "labels"], name)
    return {f: parse_labels(v) for f, v in zip(table["fname"], table["labels"], strict=True)}


def require_unique_columns(uri: str, data: bytes | None = None) -> None:
    """ManifestError naming every column a CSV's header repeats: pandas would quietly read the
    second 'Bark' as 'Bark.1', a class nobody has."""
    text = (storage.read_bytes(uri) if data is None else data).decode("utf-8-sig", "replace")
    header = next(csv.reader(io.StringIO(text)), [])
    positions: dict[str, list[int]] = {}
    for column, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(column)
    repeated = [f"{name!r} (columns {', '.join(map(str, cols))})"
                for name, cols in positions.items() if len(cols) > 1]
    if repeated:
        raise ManifestError(f"{uri}: duplicate column{'s' if len(repeated) > 1 else ''} "
                            f"{'; '.join(repeated)}")


def _read_csv(uri: str, name: str) -> pd.DataFrame:
    """A CSV as strings (no NaN guessing); ManifestError if it is not a readable CSV or
    repeats a column."""
    data = storage.read_bytes(uri)
    require_unique_columns(uri, data)
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"{name}: not a readable CSV ({str(e).strip()})") from None


def _lists_a_row(listing: str) -> bool:
    """Whether a split's listing (a CSV, or a test folder) names at least one clip."""
    if not storage.is_file(listing):
        return bool(list_audio(listing))
    return len(_read_csv(listing, listing.rsplit("/", 1)[-1])) > 0


def _require_columns(table: pd.DataFrame, columns: list[str], name: str) -> None:
    """ManifestError naming the first missing column."""
    for column in columns:
        if column not in table.columns:
            raise ManifestError(f"{name}: missing column {column!r} (has {list(table.columns)})")


def _check_safe_name(fname: str, where: str) -> None:
    """A file name must stay inside its split folder: no separators, no '..', not absolute."""
    unsafe = (
        not fname
        or fname in (".", "..")
        or any(ch in fname for ch in "/\\\x00")
        or fname.startswith("~")
    )
    if unsafe:
        raise ManifestError(f"{where}: unsafe fname {fname!r} (must be a plain file name)")
