"""K-fold training as one job: K artifacts, out-of-fold lwlrap over every curated clip once,
an ensemble inference accepts, and a re-run that trains only unfinished folds."""

import json
import shutil

import pandas as pd
import pytest

from fatlib.io.artifact import model_artifacts
from fatlib.stages.infer.config import InferConfig
from fatlib.stages.infer.pipeline import infer
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.train.kfold import train_folds
from fatlib.stages.train.run_dir import RUN_CONFIG
from fatlib.tools.synth import SynthConfig, generate_dataset

pytestmark = pytest.mark.slow
# 5 folds on the 2-CPU test Ray: all K fold tasks start at once beside one fold's workers, so
# they must hold no CPU (at 0.01 each, 5 of them left a 1.96-CPU worker no room: a hang).
K = 5


@pytest.fixture(scope="module")
def kfold(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("kfold")
    generate_dataset(root / "data", SynthConfig(n_curated=24, n_noisy=0, n_test=4,
                                                max_seconds=1.5, sample_rate=16000))
    preprocess(PreprocessConfig(data=str(root / "data"), out=str(root / "features")))
    cfg = TrainConfig(features=str(root / "features"), out=str(root / "cv"), workers=1,
                      epochs=1, batch_size=8, crop_frames=32, valid_crops=1, fold=0, n_folds=K,
                      folds="all")
    return root, cfg, train_folds(cfg)


def test_every_fold_is_a_run_and_oof_covers_each_clip_once(kfold):
    root, cfg, result = kfold
    assert result.trained == list(range(K)) and len(result.fold_lwlrap) == K
    oof = pd.concat([pd.read_parquet(root / "cv" / f"fold-{k}" / "oof.parquet")
                     for k in range(K)])
    curated = pd.read_csv(root / "data" / "train_curated.csv")
    assert sorted(oof.fname) == sorted(curated.fname)  # every curated clip exactly once
    assert result.n_clips == 24 and 0 < result.oof_lwlrap <= 1
    doc = json.loads((root / "cv" / "ensemble.json").read_text())
    assert doc["oof_lwlrap"] == pytest.approx(result.oof_lwlrap)
    assert [m["artifact"] for m in doc["models"]] == [f"fold-{k}/model" for k in range(K)]
    assert "out-of-fold lwlrap" in result.summary()


def test_inference_takes_the_k_fold_run_as_an_ensemble(kfold, tmp_path):
    root, _, _ = kfold
    assert len(model_artifacts(str(root / "cv"))) == K
    result = infer(InferConfig(models=(str(root / "cv"),), data=str(root / "data"),
                               out=str(tmp_path), run_id="cv", tta=1))
    assert result.models == K and result.scored == 4


def test_a_rerun_trains_only_the_unfinished_folds(kfold):
    root, cfg, _ = kfold
    kept = {p: p.stat().st_mtime_ns for p in (root / "cv" / "fold-0").rglob("*") if p.is_file()}
    shutil.rmtree(root / "cv" / "fold-1")  # as if the job died while fold 1 trained...
    (root / "cv" / "fold-1").mkdir()  # ...before its first checkpoint: its settings only
    (root / "cv" / "fold-1" / RUN_CONFIG).write_text("{}")
    again = train_folds(cfg)
    assert again.trained == [1]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # fold 0 untouched
    assert (root / "cv" / "fold-1" / "model" / "meta.json").exists()


def test_a_rerun_writes_the_report_of_every_fold_that_lacks_one(kfold):
    from jobs.train import fold_runs_to_report

    root, _, _ = kfold
    cv = root / "cv"
    # An earlier invocation finished folds 0-3 and wrote fold 0's report before it was killed;
    # this one trained fold 4.
    (cv / "fold-0" / "report.html").write_text("<html></html>")
    try:
        runs = fold_runs_to_report(str(cv), K, trained=[4])
        assert runs == [str(cv / f"fold-{k}") for k in (1, 2, 3, 4)]
        assert fold_runs_to_report(str(cv), K, trained=[0]) == [str(cv / f"fold-{k}")
                                                               for k in range(K)]
    finally:
        (cv / "fold-0" / "report.html").unlink()
