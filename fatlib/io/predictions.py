"""Predictions on storage: a run's submission.csv, scores.parquet, errors and _SUCCESS marker,
and the ledger of clips that successful runs under one root already scored.

Layout: <out>/<run_id>/{submission.csv, scores.parquet, errors.parquet, _SUCCESS} and
<out>/_ledger.parquet. A run counts only once its _SUCCESS (JSON) is written, last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from fatlib.io import storage

SUCCESS = "_SUCCESS"
LEDGER = "_ledger.parquet"
SUBMISSION = "submission.csv"
SCORES = "scores.parquet"
ERRORS = "errors.parquet"


def write_outputs(run_dir: str, fnames: Sequence[str], scores: np.ndarray,
                  classes: Sequence[str], errors: Sequence[tuple[str, str]]) -> None:
    """submission.csv (Kaggle format), scores.parquet, errors.parquet when clips failed."""
    table = pd.DataFrame(scores.astype(np.float32), columns=list(classes))
    table.insert(0, "fname", list(fnames))
    storage.write_bytes(storage.join(run_dir, SUBMISSION),
                        table.to_csv(index=False, float_format="%.6f").encode())
    storage.write_parquet(storage.join(run_dir, SCORES),
                          pa.Table.from_pandas(table, preserve_index=False))
    if errors:
        frame = pd.DataFrame(list(errors), columns=["fname", "reason"])
        storage.write_parquet(storage.join(run_dir, ERRORS),
                              pa.Table.from_pandas(frame, preserve_index=False))


def clear_run(run_dir: str) -> None:
    """Remove a run: its marker first, so it is never visible half-replaced."""
    storage.remove(storage.join(run_dir, SUCCESS))
    storage.remove_tree(run_dir)


def mark_success(run_dir: str, doc: dict) -> None:
    """Write the run's _SUCCESS marker (JSON), which makes it visible to readers."""
    storage.write_json(storage.join(run_dir, SUCCESS), doc)


def scored_fnames(out: str, exclude: str | None = None) -> set[str]:
    """Clips scored by the successful runs under out (the ledger), except run `exclude`.

    <out>/_ledger.parquet caches (fname, run_id) of the runs folded in so far; it is derived
    from the runs' own scores.parquet, so a crash between a run's _SUCCESS and the ledger
    update only delays the fold-in to the next run.
    """
    runs = {d for d in storage.list_dirs(out)
            if d != exclude and storage.is_file(storage.join(out, d, SUCCESS))}
    ledger_uri = storage.join(out, LEDGER)
    ledger = pd.DataFrame({"fname": pd.Series(dtype=str), "run_id": pd.Series(dtype=str)})
    if storage.is_file(ledger_uri):
        ledger = storage.read_parquet(ledger_uri).to_pandas()
    kept = ledger[ledger.run_id.isin(runs)]
    missing = sorted(runs - set(kept.run_id))
    added = [pd.DataFrame({"fname": _run_fnames(out, run), "run_id": run}) for run in missing]
    current = pd.concat([kept, *added], ignore_index=True)
    if missing or len(kept) != len(ledger):
        storage.write_parquet(ledger_uri, pa.Table.from_pandas(current, preserve_index=False))
    return set(current.fname)


def _run_fnames(out: str, run: str) -> list[str]:
    """The fnames a finished run scored."""
    table = storage.read_parquet(storage.join(out, run, SCORES), columns=["fname"])
    return table.column("fname").to_pylist()
