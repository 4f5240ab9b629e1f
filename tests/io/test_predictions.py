"""Predictions: Kaggle-format outputs, runs counted only with _SUCCESS, the scored-clips ledger."""

import numpy as np
import pandas as pd

from fatlib.io import predictions


def _run(out, run_id, fnames, success=True):
    run_dir = str(out / run_id)
    scores = np.linspace(0, 1, 2 * len(fnames)).reshape(len(fnames), 2)
    predictions.write_outputs(run_dir, fnames, scores, ["Bark", "Meow"], [("x.wav", "bad")])
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
        {"fname": "x.wav", "reason": "bad"}]


def test_ledger_counts_only_successful_runs_and_follows_removals(tmp_path):
    _run(tmp_path, "r1", ["a.wav"])
    _run(tmp_path, "r2", ["b.wav"], success=False)  # died before its marker
    _run(tmp_path, "r3", ["c.wav"])
    assert predictions.scored_fnames(str(tmp_path)) == {"a.wav", "c.wav"}
    assert predictions.scored_fnames(str(tmp_path), exclude="r3") == {"a.wav"}
    assert (tmp_path / predictions.LEDGER).exists()
    predictions.clear_run(str(tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    assert predictions.scored_fnames(str(tmp_path)) == {"c.wav"}
