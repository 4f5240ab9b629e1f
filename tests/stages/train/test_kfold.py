"""K-fold training as one job: K artifacts, out-of-fold lwlrap over every curated clip once,
an ensemble inference accepts. (That a re-run trains only unfinished folds is checked on the
self-training job's student, a K-fold run too: tests/stages/self_train.)"""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fatlib.io.artifact import model_artifacts
from fatlib.stages.infer.config import InferConfig
from fatlib.stages.infer.pipeline import infer
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.run_dir import RUN_CONFIG
from tests.conftest import SMALL_STORE
from tests.stages.conftest import K

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kfold(self_trained):
    """A K-fold run (the self-training job's teacher: the K-fold stage with noisy off, every
    fold in one job); its config and result. Read-only: the re-run test is self-training's."""
    root, cfg, result = self_trained
    return root, replace(cfg, out=str(Path(cfg.out) / "teacher")), result.teacher


def test_every_fold_is_a_run_and_oof_covers_each_clip_once(kfold):
    root, cfg, result = kfold
    cv = Path(cfg.out)
    assert result.trained == list(range(K)) and len(result.fold_lwlrap) == K
    oof = pd.concat([pd.read_parquet(cv / f"fold-{k}" / "oof.parquet") for k in range(K)])
    curated = pd.read_csv(root / "data" / "train_curated.csv")
    assert sorted(oof.fname) == sorted(curated.fname)  # every curated clip exactly once
    assert result.n_clips == SMALL_STORE["n_curated"] and 0 < result.oof_lwlrap <= 1
    doc = json.loads((cv / "ensemble.json").read_text())
    assert doc["oof_lwlrap"] == pytest.approx(result.oof_lwlrap)
    assert [m["artifact"] for m in doc["models"]] == [f"fold-{k}/model" for k in range(K)]
    assert "out-of-fold lwlrap" in result.summary()
    for k in range(K):
        run = json.loads((cv / f"fold-{k}" / RUN_CONFIG).read_text())
        assert (run["fold"], run["n_folds"], run["noisy"]) == (k, K, "off")


def test_inference_takes_the_k_fold_run_as_an_ensemble(kfold, tmp_path):
    root, cfg, _ = kfold
    assert len(model_artifacts(cfg.out)) == K
    result = infer(InferConfig(models=(cfg.out,), data=str(root / "data"),
                               out=str(tmp_path), run_id="cv", tta=1))
    assert result.models == K and result.scored == SMALL_STORE["n_test"]


@pytest.mark.bad_input
def test_a_rerun_with_other_settings_is_refused_before_any_fold_trains(kfold):
    from fatlib.stages.train.kfold import train_folds

    _, cfg, _ = kfold
    cv = Path(cfg.out)
    def files():  # _LOCK is every job's, not the run's
        return {p: p.stat().st_mtime_ns for p in cv.rglob("*") if p.is_file() and p.name != "_LOCK"}

    before = files()
    # As after an upgrade whose default recipe mixes sounds: one ensemble, one recipe.
    with pytest.raises(RunDirError, match=f"^{cv / 'fold-0'} finished with other settings: "
                                          "--sound-mix 0.0 -> 0.5; the folds of one run share"):
        train_folds(replace(cfg, sound_mix=None))
    assert files() == before


def test_a_rerun_writes_the_report_of_every_fold_that_lacks_one(tmp_path):
    from jobs.train import fold_runs_to_report

    cv, k_folds = tmp_path / "cv", 5  # which reports exist is all it reads: no training
    for k in range(k_folds):
        (cv / f"fold-{k}" / "model").mkdir(parents=True)
    # An earlier invocation finished folds 0-3 and wrote fold 0's report before it was killed;
    # this one trained fold 4.
    (cv / "fold-0" / "report.html").write_text("<html></html>")
    runs = fold_runs_to_report(str(cv), k_folds, trained=[4])
    assert runs == [str(cv / f"fold-{k}") for k in (1, 2, 3, 4)]
    assert fold_runs_to_report(str(cv), k_folds, trained=[0]) == [str(cv / f"fold-{k}")
                                                                 for k in range(k_folds)]


def test_folds_share_the_cpus_one_fold_at_a_time_unless_cpus_are_given(monkeypatch):
    from fatlib.stages import runtime
    from fatlib.stages.train import kfold as kfold_stage

    monkeypatch.setattr(runtime, "cluster_cpus", lambda: 2)
    monkeypatch.setattr(kfold_stage, "cluster_gpus", lambda: 0)
    cfg = TrainConfig(features="f", out="o", workers=1, n_folds=5, folds="all")
    # Without GPUs one fold trains at a time, its workers a little under an equal share.
    assert kfold_stage._fold_config(cfg).cpus_per_worker == 1.96
    assert kfold_stage._fold_config(replace(cfg, workers=2)).cpus_per_worker == 0.98
    assert kfold_stage._fold_config(replace(cfg, cpus_per_worker=0.5)).cpus_per_worker == 0.5
