"""Inference stage: Kaggle submission, TTA, ensembles, refusals, S3, exactly-once incremental."""

import json
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from fatlib.core.cli import run_job
from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS
from fatlib.core.frontend import Normalisation
from fatlib.core.models import build_model
from fatlib.core.scoring import standardise_classes
from fatlib.io import storage
from fatlib.io.artifact import ArtifactError, ModelMeta, save_artifact
from fatlib.io.feature_store import FeatureStoreError
from fatlib.io.predictions import update_ledger
from fatlib.stages.infer import pipeline
from fatlib.stages.infer.config import InferConfig, InferenceError
from fatlib.stages.infer.pipeline import infer
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.tools.synth import SOUND_CLASSES, SynthConfig, generate_dataset
from tests.conftest import downgrade_store

pytestmark = pytest.mark.slow
CLASSES = sorted(SOUND_CLASSES)
TINY = SynthConfig(n_curated=0, n_noisy=0, n_test=8, max_seconds=2.0, sample_rate=16000)


def _artifact(uri, seed=0, classes=CLASSES, mel=MelConfig()):
    torch.manual_seed(seed)
    model = build_model("resnet18", len(classes))
    meta = ModelMeta(arch="resnet18", classes=list(classes), mel=mel, crop_frames=64,
                     normalisation=Normalisation("global", mean=-50.0, std=20.0),
                     recipe="default", metrics={"lwlrap": 0.5})
    save_artifact(str(uri), meta, model.state_dict())
    return str(uri)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    generate_dataset(root / "data", TINY)
    return root, _artifact(root / "model_a", 0), _artifact(root / "model_b", 1)


def test_submission_is_kaggle_format_and_success_comes_last(setup, ray_local, tmp_path):
    root, model, _ = setup
    result = infer(InferConfig(models=(model,), data=str(root / "data"), out=str(tmp_path),
                               run_id="r1", tta=2))
    sub = pd.read_csv(tmp_path / "r1" / "submission.csv")
    expected = pd.read_csv(root / "data" / "sample_submission.csv")
    assert list(sub.columns) == list(expected.columns) == ["fname", *CLASSES]
    assert len(sub) == len(expected) == 8 and sorted(sub.fname) == sorted(expected.fname)
    assert ((sub[CLASSES] >= 0) & (sub[CLASSES] <= 1)).all().all()
    scores = pd.read_parquet(tmp_path / "r1" / "scores.parquet")
    np.testing.assert_allclose(scores[CLASSES].to_numpy(), sub[CLASSES].to_numpy(), atol=1e-6)
    success = json.loads((tmp_path / "r1" / "_SUCCESS").read_text())
    assert success["scored"] == 8 and success["mel_fingerprint"] == MelConfig().fingerprint
    assert success["models"][0]["uri"] == model and success["tta"] == 2
    assert success["actors"] == 1  # 8 clips: one scoring call's worth (_pool_size)
    assert result.lwlrap is not None and 0 < result.lwlrap <= 1  # test_truth.csv is known
    summary = result.summary()
    assert "lwlrap" in summary and str(tmp_path / "r1" / "submission.csv") in summary


def test_whole_clip_scores_every_clip_in_one_forward_over_all_its_frames(setup, ray_local,
                                                                          tmp_path):
    from fatlib.core.scoring import whole_clip_logits
    from fatlib.io.artifact import load_model
    from fatlib.io.clips import clip_row

    root, model, _ = setup
    result = infer(InferConfig(models=(model,), data=str(root / "data"), out=str(tmp_path),
                               run_id="w", tta=4, whole_clip=True))  # --tta is ignored
    assert (result.scored, result.failed, result.tta) == (8, 0, 1)
    assert "1 model(s) x whole clips" in result.summary()
    success = json.loads((tmp_path / "w" / "_SUCCESS").read_text())
    assert success["whole_clip"] is True and success["tta"] == 1
    sub = pd.read_csv(tmp_path / "w" / "submission.csv").set_index("fname").sort_index()
    meta, net = load_model(model)  # the same clips on the driver, whole, one forward each
    rows = [clip_row(str(p), p.name, meta.mel) for p in sorted((root / "data" / "test").iterdir())]
    stats = np.array([[r[name] for name in CLIP_STATS] for r in rows])
    logits = whole_clip_logits(net, [r["logmel"] for r in rows], [r["n_frames"] for r in rows],
                               stats, meta.mel.n_mels, meta.crop_frames, torch.device("cpu"))
    assert sub.index.tolist() == [r["fname"] for r in rows]
    np.testing.assert_allclose(sub[CLASSES].to_numpy(), torch.sigmoid(logits[:, 0]).numpy(),
                               atol=1e-5)

def test_ensemble_is_the_mean_of_its_members(setup, ray_local, tmp_path):
    root, a, b = setup

    def run(models, run_id):
        infer(InferConfig(models=models, data=str(root / "data"), out=str(tmp_path),
                          run_id=run_id, tta=1))
        return pd.read_csv(tmp_path / run_id / "submission.csv").set_index("fname").sort_index()

    both, only_a, only_b = run((a, b), "ab"), run((a,), "a"), run((b,), "b")
    np.testing.assert_allclose(both.to_numpy(), (only_a.to_numpy() + only_b.to_numpy()) / 2,
                               atol=2e-6)


def test_standardised_classes_are_each_members_logits_standardised_over_the_run(
        setup, ray_local, tmp_path, monkeypatch):
    root, a, b = setup

    def run(models, run_id, **options):
        infer(InferConfig(models=models, data=str(root / "data"), out=str(tmp_path),
                          run_id=run_id, tta=1, **options))
        return pd.read_csv(tmp_path / run_id / "submission.csv").set_index("fname").sort_index()

    with pytest.raises(InferenceError, match="needs at least 32 clips in a run, this one has 8"):
        run((a, b), "refused", standardise_classes=True)
    assert not (tmp_path / "refused").exists()  # refused before anything was scored or written
    monkeypatch.setattr(pipeline, "MIN_STANDARDISED_CLIPS", 4)  # the 8-clip test split
    result = infer(InferConfig(models=(a, b), data=str(root / "data"), out=str(tmp_path),
                               run_id="std", tta=1, standardise_classes=True))
    assert "classes standardised over the run" in result.summary()
    both = pd.read_csv(tmp_path / "std" / "submission.csv").set_index("fname").sort_index()
    members = np.stack([run((m,), name).to_numpy() for m, name in ((a, "a"), (b, "b"))])
    np.testing.assert_allclose(both.to_numpy(), standardise_classes(members), atol=1e-5)
    doc = json.loads((tmp_path / "std" / "_SUCCESS").read_text())
    assert doc["standardise_classes"] is True


def test_actors_score_with_the_weights_the_driver_verified(setup, ray_local, tmp_path,
                                                           monkeypatch):
    root, a, _ = setup
    model = shutil.copytree(a, tmp_path / "model")
    baseline = infer(InferConfig(models=(a,), data=str(root / "data"), out=str(tmp_path),
                                 run_id="a", tta=1))
    read_inputs = pipeline.input_rows

    def overwritten_after_the_check(*args, **kwargs):
        (model / "weights.pt").write_bytes(b"replaced while the job runs")
        return read_inputs(*args, **kwargs)

    monkeypatch.setattr(pipeline, "input_rows", overwritten_after_the_check)
    result = infer(InferConfig(models=(str(model),), data=str(root / "data"),
                               out=str(tmp_path), run_id="copy", tta=1))
    assert result.scored == baseline.scored == 8 and result.failed == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "copy" / "submission.csv"),
                                  pd.read_csv(tmp_path / "a" / "submission.csv"))


@pytest.mark.bad_input
def test_mismatched_ensembles_and_fingerprints_are_refused(setup, ray_local, tmp_path):
    root, a, _ = setup
    other_classes = _artifact(tmp_path / "other", classes=CLASSES[:-1] + ["Zebra"])
    with pytest.raises(InferenceError, match="classes differ"):
        infer(InferConfig(models=(a, other_classes), data=str(root / "data"), out=str(tmp_path)))
    other_mel = _artifact(tmp_path / "mel64", mel=MelConfig(n_mels=64))
    with pytest.raises(InferenceError, match=f"fingerprint {MelConfig(n_mels=64).fingerprint}"):
        infer(InferConfig(models=(a, other_mel), data=str(root / "data"), out=str(tmp_path)))
    with pytest.raises(ArtifactError, match="not a model artifact"):
        infer(InferConfig(models=(str(tmp_path),), data=str(root / "data"), out=str(tmp_path)))
    with pytest.raises(InferenceError, match="run id"):
        infer(InferConfig(models=(a,), data=str(root / "data"), out=str(tmp_path),
                          run_id="../escape"))


def test_feature_store_input_must_match_the_model(setup, ray_local, tmp_path):
    root, a, _ = setup
    preprocess(PreprocessConfig(data=str(root / "data"), out=str(tmp_path / "features")))
    result = infer(InferConfig(models=(a,), data=str(tmp_path / "features"),
                               out=str(tmp_path / "pred"), run_id="f"))
    assert result.scored == 8
    # The same clips from audio score the same: one clip path, stats computed on the fly.
    from_audio = infer(InferConfig(models=(a,), data=str(root / "data"),
                                   out=str(tmp_path / "pred"), run_id="a"))
    stored = pd.read_csv(tmp_path / "pred" / "f" / "submission.csv")
    decoded = pd.read_csv(tmp_path / "pred" / "a" / "submission.csv")
    assert from_audio.scored == 8 and stored.equals(decoded)
    # A store written before clip stats existed is refused, naming the command that rebuilds it.
    old = downgrade_store(tmp_path / "features", tmp_path / "old")
    with pytest.raises(FeatureStoreError, match=f"--out {old} --overwrite$"):
        infer(InferConfig(models=(a,), data=str(old), out=str(tmp_path / "pred"), run_id="o"))
    assert not (tmp_path / "pred" / "o").exists()
    mel64 = _artifact(tmp_path / "mel64", mel=MelConfig(n_mels=64))
    with pytest.raises(FeatureStoreError, match=MelConfig(n_mels=64).fingerprint):
        infer(InferConfig(models=(mel64,), data=str(tmp_path / "features"),
                          out=str(tmp_path / "pred")))


def test_model_input_and_output_on_s3(setup, ray_local, s3_bucket):
    root, a, _ = setup
    for path in (root / "data").rglob("*"):
        if path.is_file():
            storage.write_bytes(f"{s3_bucket}/data/{path.relative_to(root / 'data')}",
                                path.read_bytes())
    model = _artifact(f"{s3_bucket}/models/a")
    # Two actors asked for (a run this small would get one): both fetch the weights the
    # driver read from S3 through Ray's object store, and share the clips.
    result = infer(InferConfig(models=(model,), data=f"{s3_bucket}/data",
                               out=f"{s3_bucket}/pred", run_id="s3run", tta=2, workers=2))
    assert result.scored == 8
    sub = pd.read_csv(pd.io.common.BytesIO(storage.read_bytes(result.submission)))
    assert len(sub) == 8 and list(sub.columns) == ["fname", *CLASSES]
    success = json.loads(storage.read_bytes(f"{s3_bucket}/pred/s3run/_SUCCESS"))
    assert (success["scored"], success["actors"]) == (8, 2)


def _successful_rows(out):
    """Every scored row of every run that finished (has _SUCCESS)."""
    frames = [pd.read_csv(run / "submission.csv") for run in sorted(out.iterdir())
              if (run / "_SUCCESS").exists()]
    return pd.concat(frames, ignore_index=True)


def test_incremental_scores_every_clip_exactly_once(setup, ray_local, tmp_path, monkeypatch):
    root, a, _ = setup
    incoming, out = tmp_path / "incoming", tmp_path / "pred"
    incoming.mkdir()
    clips = sorted((root / "data" / "test").iterdir())

    def land(paths):
        for p in paths:
            shutil.copy(p, incoming / p.name)

    def run(run_id):
        return infer(InferConfig(models=(a,), data=str(incoming), out=str(out), run_id=run_id,
                                 tta=1, incremental=True))

    land(clips[:3])
    assert run("t1").scored == 3
    land(clips[3:6])
    from fatlib.io import predictions

    real_write = predictions.write_outputs

    def dies_midway(run_dir, *args):
        real_write(run_dir, *args)
        raise RuntimeError("killed while finishing")

    monkeypatch.setattr(predictions, "write_outputs", dies_midway)
    with pytest.raises(RuntimeError):
        run("t2")
    monkeypatch.undo()
    assert (out / "t2" / "submission.csv").exists() and not (out / "t2" / "_SUCCESS").exists()
    third = run("t3")
    assert (third.scored, third.skipped) == (3, 3)  # the dead run's clips are scored again
    land(clips[6:])
    assert run("t4").scored == 2
    idle = run("t5")
    assert idle.scored == 0 and not (out / "t5").exists()  # nothing new: no empty run
    assert "nothing new to score (8 already scored)" in idle.summary()
    again = run("t3")  # re-running a run id replaces that run cleanly
    assert again.scored == 3
    rows = _successful_rows(out)
    assert sorted(rows.fname) == sorted(p.name for p in clips)  # each clip exactly once
    assert update_ledger(str(out)).scored == {p.name for p in clips}
    assert (out / "_ledger.parquet").exists()


def _in_parts(store, to, split, size):
    """A copy of the store whose split's rows are re-cut into parts of size rows each."""
    import pyarrow.parquet as pq

    shutil.copytree(store, to)
    manifest = json.loads((to / "_MANIFEST.json").read_text())
    entry = manifest["splits"][split]
    rows = pq.read_table([to / split / name for name in entry["files"]])
    for name in entry["files"]:
        (to / split / name).unlink()
    entry["files"] = [f"part-{i:03d}.parquet" for i in range(0, len(rows), size)]
    for i, name in zip(range(0, len(rows), size), entry["files"], strict=True):
        pq.write_table(rows.slice(i, size), to / split / name)
    (to / "_MANIFEST.json").write_text(json.dumps(manifest))
    return to


def test_incremental_from_a_store_reads_only_the_parts_holding_new_clips(small_store, tmp_path,
                                                                         monkeypatch):
    import ray.data

    from fatlib.io.feature_store import FeatureStore
    from fatlib.io.predictions import Ledger
    from fatlib.stages.infer.inputs import input_rows

    features = _in_parts(small_store / "features", tmp_path / "features", "train_curated", 8)
    store = FeatureStore.open(str(features))
    clips = store.clips("train_curated").to_pydict()
    by_part = {}
    for fname, part in zip(clips["fname"], clips["file"], strict=True):
        by_part.setdefault(part, []).append(fname)
    first, second, third = sorted(by_part)  # 24 curated clips, 8 a part
    done = {*by_part[first], by_part[second][0]}  # one part scored, one clip of another
    read = []
    real_read = ray.data.read_parquet
    monkeypatch.setattr(ray.data, "read_parquet",
                        lambda paths, **kw: read.append(paths) or real_read(paths, **kw))
    cfg = InferConfig(models=(), data=str(features), out=str(tmp_path / "pred"),
                      split="train_curated", incremental=True)
    inputs = input_rows(cfg, MelConfig(), store.classes,
                        Ledger(scored=frozenset({*done, "another-split.wav"})))
    assert [os.path.basename(p) for p in read[0]] == [second, third]  # the done part unread
    assert (inputs.skipped, inputs.n_rows) == (9, 15)
    rows = inputs.rows.take_all()
    assert sorted(r["fname"] for r in rows) == sorted(set(clips["fname"]) - done)
    assert {r["error"] for r in rows} == {""} and inputs.truth is not None


def test_small_runs_split_into_enough_scoring_calls_for_every_actor():
    from fatlib.stages.infer.pipeline import _batch_size

    assert _batch_size(32, 100, 2) == 13  # 8 calls: 4 per actor instead of 76 / 24 clips
    assert _batch_size(32, 10_000, 2) == 32  # large runs: the configured size
    assert _batch_size(32, 3, 4) == 1


def test_actor_count_follows_the_cluster_gpus_or_cpus(ray_local):
    from fatlib.stages.infer.pipeline import default_workers

    assert default_workers(0.0) == 2  # one single-thread actor per CPU of the 2-CPU Ray
    with pytest.raises(InferenceError, match="--gpus-per-worker 1: the cluster has 0 GPU"):
        default_workers(1.0)  # asking for GPU actors nobody can host would wait forever


def test_a_small_run_starts_no_more_actors_than_it_has_scoring_calls():
    from fatlib.stages.infer.pipeline import _pool_size

    # (A run's _SUCCESS records its actors: test_submission... and the S3 test.)
    assert [_pool_size(8, n, 0.0) for n in (1, 32, 33, 100, 10_000)] == [1, 1, 2, 4, 8]
    assert [_pool_size(4, n, 0.5) for n in (511, 513, 10_000)] == [1, 2, 4]


@pytest.mark.bad_input
def test_scoring_actors_the_cluster_cannot_hold_are_refused_before_scoring(setup, ray_local,
                                                                           tmp_path):
    from fatlib.stages.runtime import ResourceError

    root, model, _ = setup
    cfg = InferConfig(models=(model,), data=str(root / "data"), out=str(tmp_path), workers=3,
                      cpus_per_worker=1.0)
    with pytest.raises(ResourceError, match=r"inference \(3 scoring actors\) asks for 3 x "
                                            r"\{CPU 1\} but the cluster has CPU 2"):
        infer(cfg)
    with pytest.raises(ResourceError, match=r"1 x \{fatlib_cpu 1\}.*fatlib_cpu 0"):
        infer(replace(cfg, workers=1, node_resource="fatlib_cpu"))
    assert not any(tmp_path.iterdir())  # nothing written


def _no_ray(monkeypatch):
    """Make starting Ray or the scoring pipeline fail the test: refusals come first."""
    def started(*args, **kwargs):
        raise AssertionError("Ray or the scoring pipeline started")

    monkeypatch.setattr(pipeline, "ensure_ray", started)
    monkeypatch.setattr(pipeline, "_score", started)


def _refusal(capsys, cfg):
    """(exit status, stderr) of the infer job on cfg."""
    status = run_job("infer", lambda: infer(cfg), lambda result: result.summary())
    out, err = capsys.readouterr()
    assert out == ""
    return status, err


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_meta(model, **changes):
    path = model / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.bad_input
@pytest.mark.parametrize("damage, message", [
    (lambda m: _truncate(m / "weights.pt"),
     r"weights\.pt has \d+ bytes, meta\.json recorded \d+ \(truncated or replaced\)"),
    (lambda m: _truncate(m / "meta.json"), r"meta\.json: not valid JSON \(truncated\?\)"),
    (lambda m: _edit_meta(m, crop_frames=256), r"meta\.json: edited after export"),
    (lambda m: _edit_meta(m, classes=[CLASSES[1], CLASSES[0], *CLASSES[2:]]),
     r"meta\.json: edited after export .*the class order"),
], ids=["truncated-weights", "truncated-meta", "edited-field", "swapped-classes"])
def test_damaged_artifacts_are_refused_on_the_driver(tmp_path, monkeypatch, capsys, damage,
                                                     message):
    model = tmp_path / "model"
    _artifact(model)
    damage(model)
    _no_ray(monkeypatch)
    status, err = _refusal(capsys, InferConfig(models=(str(model),), data=str(tmp_path),
                                               out=str(tmp_path / "pred")))
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"infer: {model}")
    assert re.search(message, err), err
    assert not (tmp_path / "pred").exists()


@pytest.mark.bad_input
def test_every_fold_of_an_ensemble_is_verified_and_shares_the_class_order(tmp_path,
                                                                          monkeypatch, capsys):
    cv = tmp_path / "cv"
    for k in (0, 1):
        _artifact(cv / f"fold-{k}" / "model", seed=k)
    (cv / "ensemble.json").write_text(json.dumps({"n_folds": 2, "models": [
        {"artifact": f"fold-{k}/model", "lwlrap": 0.5} for k in (0, 1)]}))
    _no_ray(monkeypatch)
    cfg = InferConfig(models=(str(cv),), data=str(tmp_path), out=str(tmp_path / "pred"))
    _edit_meta(cv / "fold-1" / "model", classes=[CLASSES[1], CLASSES[0], *CLASSES[2:]])
    status, err = _refusal(capsys, cfg)
    assert status == 2 and f"{cv / 'fold-1' / 'model'}/meta.json: edited after export" in err
    swapped = [CLASSES[1], CLASSES[0], *CLASSES[2:]]  # sealed as such: a different vocabulary
    _artifact(cv / "fold-1" / "model", classes=swapped)
    status, err = _refusal(capsys, cfg)
    assert status == 2 and err.count("\n") == 1 and "classes differ" in err


@pytest.mark.bad_input
def test_duplicate_sample_submission_columns_are_named(setup, tmp_path, monkeypatch, capsys):
    root, a, _ = setup
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    lines = (data / "sample_submission.csv").read_text().splitlines()
    header = lines[0].split(",")
    lines[0] = ",".join([*header, header[2]])  # the second class again, as the last column
    (data / "sample_submission.csv").write_text("\n".join(lines) + "\n")
    _no_ray(monkeypatch)
    status, err = _refusal(capsys, InferConfig(models=(a,), data=str(data), out=str(tmp_path)))
    assert status == 2 and err == (f"infer: {data / 'sample_submission.csv'}: duplicate column "
                                   f"{header[2]!r} (columns 3, {len(header) + 1})\n")


@pytest.mark.bad_input
def test_incremental_runs_retry_a_failed_clip_only_once_its_file_changes(setup, ray_local,
                                                                          tmp_path):
    root, a, _ = setup
    incoming, out = tmp_path / "incoming", tmp_path / "pred"
    incoming.mkdir()
    good = sorted((root / "data" / "test").iterdir())[:2]
    for p in good:
        shutil.copy(p, incoming / p.name)
    bad = incoming / "zz_bad.wav"
    bad.write_bytes(b"RIFF not really a wav file")

    def run(run_id):
        return infer(InferConfig(models=(a,), data=str(incoming), out=str(out), run_id=run_id,
                                 tta=1, incremental=True))

    first = run("t1")
    assert (first.scored, first.failed) == (2, 1)
    assert pd.read_parquet(out / "t1" / "errors.parquet").fname.tolist() == ["zz_bad.wav"]
    ledger_written = (out / "_ledger.parquet").stat().st_mtime_ns
    idle = run("t2")
    assert not idle.written and not (out / "t2").exists()
    assert idle.summary() == ("run t2: nothing new to score (2 already scored, 1 failed before "
                              "and unchanged since); nothing written")
    assert (out / "_ledger.parquet").stat().st_mtime_ns == ledger_written
    os.utime(bad, ns=(bad.stat().st_atime_ns, bad.stat().st_mtime_ns + 10**9))  # touched
    retried = run("t3")
    assert (retried.scored, retried.failed, retried.skipped) == (0, 1, 2)
    assert not run("t4").written and not (out / "t4").exists()


@pytest.mark.bad_input
def test_a_second_inference_into_an_out_in_use_is_refused_at_once(setup, monkeypatch, capsys,
                                                                  tmp_path):
    from fatlib.io.locks import LOCK_FILE, hold

    root, a, _ = setup
    out = tmp_path / "pred"
    _no_ray(monkeypatch)
    cfg = InferConfig(models=(a,), data=str(root / "data"), out=str(out), incremental=True)
    with hold(str(out), "infer"):  # a first incremental run, still scoring
        status, err = _refusal(capsys, cfg)
        assert os.listdir(out) == [LOCK_FILE]  # no run, no ledger of the second
    assert status == 2 and err.startswith(f"infer: {out} is in use by infer (pid {os.getpid()} ")
    assert err.endswith("; wait for it or choose another --out\n") and err.count("\n") == 1


@pytest.mark.bad_input
def test_an_out_under_a_file_is_refused_before_the_models_are_read(setup, monkeypatch, capsys,
                                                                   tmp_path):
    root, _, _ = setup
    file = tmp_path / "predictions.csv"
    file.write_text("mine")
    _no_ray(monkeypatch)
    # The model does not exist: the --out is checked before anything is read.
    cfg = InferConfig(models=(str(tmp_path / "no-model"),), data=str(root / "data"),
                      out=str(file / "runs"))
    status, err = _refusal(capsys, cfg)
    assert status == 2 and err == (f"infer: {file / 'runs'} cannot be written: {file} is a "
                                   "file, not a directory; choose another --out\n")
    assert file.read_text() == "mine"


@pytest.mark.bad_input
@pytest.mark.timeout(180)  # a FIFO opened for reading would block the decode task forever
def test_entries_that_are_not_readable_clips_are_failed_rows_and_the_rest_scored(
        setup, ray_local, tmp_path):
    root, a, _ = setup
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    test = data / "test"
    (test / "folder.wav").mkdir()
    os.mkfifo(test / "pipe.wav")
    (test / "loop.wav").symlink_to("loop.wav")
    bad = {"folder.wav": "cannot read: is a directory",
           "pipe.wav": "cannot read: is a FIFO (named pipe)", "loop.wav": "cannot read:",
           "gone.wav": "file not found"}
    if os.geteuid() != 0:  # root reads a file without permissions
        shutil.copy(next(test.glob("*.wav")), test / "locked.wav")
        (test / "locked.wav").chmod(0)
        bad["locked.wav"] = "cannot read:"
    submission = pd.read_csv(data / "sample_submission.csv")
    extra = pd.DataFrame({"fname": list(bad)}).reindex(columns=submission.columns, fill_value=0)
    pd.concat([submission, extra]).to_csv(data / "sample_submission.csv", index=False)
    result = infer(InferConfig(models=(a,), data=str(data), out=str(tmp_path / "pred"),
                               run_id="r", tta=1))
    assert (result.scored, result.failed) == (8, len(bad))
    run = tmp_path / "pred" / "r"
    assert (run / "_SUCCESS").exists()
    assert sorted(pd.read_csv(run / "submission.csv").fname) == sorted(submission.fname)
    errors = pd.read_parquet(run / "errors.parquet").set_index("fname").reason.to_dict()
    assert set(errors) == set(bad)
    for fname, reason in bad.items():
        assert errors[fname].startswith(reason), (fname, errors[fname])


def test_a_scoring_failure_names_the_clips_of_its_batch(setup, ray_local):
    # The note is what the job's one-line error shows after the root cause (stages.console).
    import ray

    from fatlib.io.artifact import check_artifact

    _, model, _ = setup
    meta, weights = check_artifact(model)
    scorer = pipeline.Scorer([(model, meta, ray.put(weights))], tta=1, how="mean_sigmoid",
                             threads=1)
    fnames = ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]
    batch = {"fname": np.array(fnames, dtype=object),
             "logmel": np.array([b"\x00\x01\x02"] * 5, dtype=object),  # not whole float16s
             "n_frames": np.full(5, 10), "error": np.array(["", "", "", "", "gone"], dtype=object),
             **{name: np.zeros(5, dtype=np.float32) for name in CLIP_STATS}}
    with pytest.raises(ValueError) as caught:
        scorer(batch)
    assert caught.value.__notes__ == ["while scoring 4 clip(s): a.wav, b.wav, c.wav, ..."]
