"""Predictions on storage: a run's submission.csv, scores.parquet, errors and _SUCCESS marker,
and the ledger of what successful runs under one root did: clips scored, and clips that failed
on a given version of their file.

Layout: <out>/<run_id>/{submission.csv, scores.parquet, errors.parquet, _SUCCESS} and
<out>/_ledger.parquet. A run counts only once its _SUCCESS (JSON) is written, last. A ledger or
a run's errors.parquet from before failures were recorded with their file's version is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from fatlib.core.errors import UserError
from fatlib.io import storage

SUCCESS = "_SUCCESS"
LEDGER = "_ledger.parquet"
SUBMISSION = "submission.csv"
SCORES = "scores.parquet"
ERRORS = "errors.parquet"
# version: the failed clip's file version (io.files.file_versions); "" if scored or unknown.
_LEDGER_COLUMNS = ["fname", "run_id", "failed", "version"]
_ERRORS_COLUMNS = ["fname", "version"]


class PredictionsError(UserError):
    """A ledger or a run's outputs that this fatlib does not read."""


@dataclass(frozen=True)
class Ledger:
    """Clips successful runs scored, and (fname, file version) of clips they failed on."""

    scored: frozenset[str] = frozenset()
    failed: frozenset[tuple[str, str]] = frozenset()

    def is_done(self, fname: str, version: str = "") -> bool:
        """Whether a clip needs no scoring: scored once, or failed on this very file version
        (an undecodable clip is retried only once its file changes)."""
        return fname in self.scored or (fname, version) in self.failed


def write_outputs(run_dir: str, fnames: Sequence[str], scores: np.ndarray,
                  classes: Sequence[str], errors: Sequence[tuple[str, str]],
                  versions: Mapping[str, str] | None = None) -> None:
    """submission.csv (Kaggle format), scores.parquet, errors.parquet when clips failed (fname,
    reason and the failed file's version from `versions`, so the ledger knows when it changed)."""
    table = pd.DataFrame(scores.astype(np.float32), columns=list(classes))
    table.insert(0, "fname", list(fnames))
    storage.write_bytes(storage.join(run_dir, SUBMISSION),
                        table.to_csv(index=False, float_format="%.6f").encode())
    storage.write_parquet(storage.join(run_dir, SCORES),
                          pa.Table.from_pandas(table, preserve_index=False))
    if errors:
        frame = pd.DataFrame(list(errors), columns=["fname", "reason"])
        frame["version"] = [(versions or {}).get(fname, "") for fname in frame.fname]
        storage.write_parquet(storage.join(run_dir, ERRORS),
                              pa.Table.from_pandas(frame, preserve_index=False))


def clear_run(run_dir: str) -> None:
    """Remove a run: its marker first, so it is never visible half-replaced."""
    storage.remove(storage.join(run_dir, SUCCESS))
    storage.remove_tree(run_dir)


def mark_success(run_dir: str, doc: dict) -> None:
    """Write the run's _SUCCESS marker (JSON), which makes it visible to readers."""
    storage.write_json(storage.join(run_dir, SUCCESS), doc)


def update_ledger(out: str, exclude: str | None = None) -> Ledger:
    """The ledger of the successful runs under out, except run `exclude`, folding newly
    finished runs into <out>/_ledger.parquet (written only when that changes it).

    The file is a cache derived from the runs' own scores.parquet and errors.parquet, so a
    crash between a run's _SUCCESS and the ledger update only delays the fold-in.
    """
    runs = {d for d in storage.list_dirs(out)
            if d != exclude and storage.is_file(storage.join(out, d, SUCCESS))}
    ledger_uri = storage.join(out, LEDGER)
    ledger = _entries([], "", failed=False)
    if storage.is_file(ledger_uri):
        ledger = _read_table(ledger_uri, _LEDGER_COLUMNS,
                             "delete it: the next --incremental run rebuilds it from the runs")
    kept = ledger[ledger.run_id.isin(runs)]
    added = [_run_entries(out, run) for run in sorted(runs - set(kept.run_id))]
    current = pd.concat([kept, *added], ignore_index=True)
    if sum(len(a) for a in added) or len(kept) != len(ledger):
        storage.write_parquet(ledger_uri, pa.Table.from_pandas(current, preserve_index=False))
    failed = current.failed.to_numpy(dtype=bool)
    return Ledger(scored=frozenset(current.fname[~failed]),
                  failed=frozenset(zip(current.fname[failed], current.version[failed],
                                       strict=True)))


def _run_entries(out: str, run: str) -> pd.DataFrame:
    """Ledger rows of one finished run: the clips it scored, and those that failed."""
    scored = storage.read_parquet(storage.join(out, run, SCORES), columns=["fname"])
    frames = [_entries(scored.column("fname").to_pylist(), run, failed=False)]
    errors_uri = storage.join(out, run, ERRORS)
    if storage.is_file(errors_uri):
        errors = _read_table(errors_uri, _ERRORS_COLUMNS,
                             f"score its clips again with --run-id {run}, or remove the run")
        frames.append(_entries(list(errors.fname), run, failed=True, versions=errors.version))
    return pd.concat(frames, ignore_index=True)


def _read_table(uri: str, columns: list[str], fix: str) -> pd.DataFrame:
    """The Parquet table at uri, its given columns; refused in one line saying what to do
    (fix) when it lacks any: written by an older fatlib."""
    table = storage.read_parquet(uri).to_pandas()
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PredictionsError(f"{uri}: written by an older fatlib (no {' or '.join(missing)} "
                               f"column), no longer read; {fix}")
    return table[columns]


def _entries(fnames: list[str], run: str, failed: bool, versions=None) -> pd.DataFrame:
    """Ledger rows with the ledger's column types."""
    return pd.DataFrame({
        "fname": pd.Series(fnames, dtype=object),
        "run_id": pd.Series([run] * len(fnames), dtype=object),
        "failed": pd.Series([failed] * len(fnames), dtype=bool),
        "version": pd.Series(list(versions) if versions is not None else [""] * len(fnames),
                             dtype=object),
    })
