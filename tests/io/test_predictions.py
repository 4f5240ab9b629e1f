"""Predictions: Kaggle-format outputs, runs counted only with _SUCCESS, the scored-clips ledger."""

import numpy as np
import pandas as pd
import pytest

from fatlib.io import predictions


def _run(out, run_id, fnames, success=True):
    run_dir = str(out / run_id)
    scores = np.linspace(0, 1, 2 * len(fnames)).reshape(len(fnames), 2)
    predictions.write_outputs(run_dir, fnames, scores, ["Bark", "Meow"], [("x.wav", "bad")],
                              {"x.wav": "10:1"})
    if success:
        predictions.mark_success(run_dir, {"run_id": run_id})
    return run_dir


def test_outputs_are_kaggle_format(tmp_path):
    run_dir = _run(tmp_path, "r1", ["a.wav", "b.wav"])
    submission = pd.read_csv(f"{run_dir}/submission.csv")
    assert list(submission.columns) == ["fname", "Bark", "Meow"]
    assert list(submission.fname) == ["a.wav", "b.wav"]
    assert pd.read_parquet(f"{run_dir}/scores.parquet").shape == (2, 3)
    assert pd.read_parquet(f"{run_dir}/errors.parquet").to_dict("records") == [
        {"fname": "x.wav", "reason": "bad", "version": "10:1"}]


def test_ledger_counts_only_successful_runs_and_follows_removals(tmp_path):
    _run(tmp_path, "r1", ["a.wav"])
    _run(tmp_path, "r2", ["b.wav"], success=False)  # died before its marker
    _run(tmp_path, "r3", ["c.wav"])
    assert predictions.update_ledger(str(tmp_path)).scored == {"a.wav", "c.wav"}
    assert predictions.update_ledger(str(tmp_path), exclude="r3").scored == {"a.wav"}
    assert (tmp_path / predictions.LEDGER).exists()
    predictions.clear_run(str(tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    assert predictions.update_ledger(str(tmp_path)).scored == {"c.wav"}


def test_ledger_knows_failures_until_their_file_changes(tmp_path):
    _run(tmp_path, "r1", ["a.wav"])  # x.wav failed at version 10:1
    ledger = predictions.update_ledger(str(tmp_path))
    assert ledger.failed == {("x.wav", "10:1")}
    assert ledger.is_done("a.wav") and ledger.is_done("x.wav", "10:1")
    assert not ledger.is_done("x.wav", "10:2")  # touched or replaced: worth retrying
    written = (tmp_path / predictions.LEDGER).stat().st_mtime_ns
    assert predictions.update_ledger(str(tmp_path)) == ledger  # nothing new: nothing written
    assert (tmp_path / predictions.LEDGER).stat().st_mtime_ns == written
    _run(tmp_path, "r2", ["x.wav"])  # replaced by a good clip and scored: done for good
    assert predictions.update_ledger(str(tmp_path)).is_done("x.wav", "10:2")


@pytest.mark.bad_input
def test_ledgers_and_runs_from_before_failures_were_recorded_are_refused(tmp_path):
    run_dir = _run(tmp_path, "r1", ["a.wav"])
    ledger = tmp_path / predictions.LEDGER
    pd.DataFrame({"fname": ["a.wav"], "run_id": ["r1"]}).to_parquet(ledger)
    with pytest.raises(predictions.PredictionsError) as refused:
        predictions.update_ledger(str(tmp_path))
    assert str(refused.value) == (
        f"{ledger}: written by an older fatlib (no failed or version column), no longer read; "
        "delete it: the next --incremental run rebuilds it from the runs")
    ledger.unlink()
    pd.DataFrame({"fname": ["x.wav"], "reason": ["bad"]}).to_parquet(f"{run_dir}/errors.parquet")
    with pytest.raises(predictions.PredictionsError) as refused:
        predictions.update_ledger(str(tmp_path))
    assert str(refused.value) == (
        f"{run_dir}/errors.parquet: written by an older fatlib (no version column), no longer "
        "read; score its clips again with --run-id r1, or remove the run")
    assert predictions.update_ledger(str(tmp_path), exclude="r1").scored == set()  # re-run
