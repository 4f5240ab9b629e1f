"""The run report's page: its facts come from the run's recorded config, its per-class lwlrap
from the run's own validation scores (oof.parquet)."""

import re
from dataclasses import asdict

import numpy as np
import pandas as pd

from fatlib.report.run_report import _html, _validation_scores
from fatlib.stages.train.config import TrainConfig


def _metrics(**settings) -> dict:
    config = asdict(TrainConfig(features="store", out="run", **settings))
    config.pop("mel")
    return {"best_epoch": 3, "lwlrap": 0.8125, "config": config}


def _facts(page: str) -> dict[str, str]:
    return dict(re.findall(r"<tr><th[^>]*>([^<]*)</th><td>([^<]*)</td></tr>", page))


def test_the_page_lists_every_recorded_setting_by_its_flag():
    metrics = _metrics(freq_shift=4, pad="wrap", ema=2.0, deltas=True, sound_mix_gain=3.0,
                       noisy="warmup", fold=1, n_folds=4, workers=3)
    facts = _facts(_html("/runs/x", metrics, []))
    assert facts["run"] == "/runs/x" and facts["best epoch"] == "3"
    assert facts["validation lwlrap (best epoch)"] == "0.8125"
    assert {k: facts[k] for k in ("--freq-shift", "--pad", "--ema", "--deltas",
                                  "--sound-mix-gain", "--noisy", "--fold", "--specaugment")} \
        == {"--freq-shift": "4", "--pad": "wrap", "--ema": "2", "--deltas": "on",
            "--sound-mix-gain": "3", "--noisy": "warmup", "--fold": "1/4",
            "--specaugment": "off"}
    # Where and how the run executed is not a fact of the model.
    assert not {"--out", "--workers", "--resume", "--max-failures"} & set(facts)
    assert 'title="mixup alpha, Beta(alpha, alpha); 0 = off"' in \
        _html("/runs/x", metrics, [])  # each flag explained by its help


def test_a_run_recorded_before_a_setting_existed_shows_it_off():
    metrics = _metrics()
    del metrics["config"]["freq_shift"], metrics["config"]["noisy_smoothing"]
    facts = _facts(_html("r", metrics, []))
    # Soft targets' default is 0.2 today; a run from before they existed had none.
    assert (facts["--freq-shift"], facts["--noisy-smoothing"]) == ("0", "0")


def test_validation_scores_are_the_runs_own_out_of_fold_scores(tmp_path):
    classes = ["dog", "cat"]
    assert _validation_scores(str(tmp_path), classes) == {}  # a run from before oof.parquet
    pd.DataFrame({"fname": ["a.wav", "b.wav"], "cat": [0.25, 0.5], "dog": [0.75, 0.125]}
                 ).to_parquet(tmp_path / "oof.parquet")
    scores = _validation_scores(str(tmp_path), classes)
    assert list(scores) == ["a.wav", "b.wav"]
    np.testing.assert_array_equal(scores["a.wav"], [0.75, 0.25])  # vocabulary order
    np.testing.assert_array_equal(scores["b.wav"], [0.125, 0.5])

