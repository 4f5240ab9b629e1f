"""Training stage on Ray Train: learns, survives a worker crash, resumes, exports the artifact."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray.train
import torch

from fatlib.core.config import ConfigError, MelConfig
from fatlib.core.features import CLIP_STATS
from fatlib.core.labels import multi_hot
from fatlib.io import storage
from fatlib.io.artifact import load_model
from fatlib.io.feature_store import FeatureStoreError
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.stages.runtime import ResourceError
from fatlib.stages.train.checkpoints import read_oof
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.driver import train
from fatlib.tools.synth import SynthConfig, generate_dataset
from tests.conftest import downgrade_store

pytestmark = pytest.mark.slow
# Small but learnable: 100 curated clips (80 train / 20 valid), 64-frame crops.
DATA = SynthConfig(n_curated=100, n_noisy=20, n_test=0, max_seconds=3.0, sample_rate=22050)


@pytest.fixture(scope="module")
def features(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    generate_dataset(root / "data", DATA)
    preprocess(PreprocessConfig(data=str(root / "data"), out=str(root / "features")))
    return str(root / "features")


def _cfg(features, out, **kw):
    base = dict(features=features, out=str(out), workers=2, epochs=4, lr=3e-3, batch_size=16,
                crop_frames=64, valid_crops=2, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def drilled_run(features, tmp_path_factory):
    """2 workers, 5 epochs, one worker crashes after epoch 2 (after its checkpoint)."""
    out = tmp_path_factory.mktemp("runs") / "drill"
    return out, train(_cfg(features, out, epochs=5, fail_after_epoch=2, normalisation="global"))


def test_two_worker_training_learns(drilled_run):
    _, result = drilled_run
    # Random scores give ~0.3 on these 10 classes (1.5 labels a clip); 20 validation clips
    # make the figure noisy from run to run (Ray Data's block order varies), hence the margin.
    assert result.best_lwlrap > 0.55
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_worker_crash_resumes_from_the_checkpoint(drilled_run):
    out, result = drilled_run
    assert (out / ".fault-drill-done").exists()  # the crash happened
    # Every epoch ran once: the restarted group continued at epoch 3, not from zero.
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4, 5]
    assert list(history.columns) == ["epoch", "train_loss", "valid_loss", "lwlrap", "time", "lr"]


def test_artifact_holds_everything_inference_needs(drilled_run, features):
    out, result = drilled_run
    meta_doc = json.loads((out / "model" / "meta.json").read_text())
    assert meta_doc["arch"] == "resnet18" and meta_doc["in_channels"] == 1
    assert meta_doc["classes"] == json.loads(
        storage.read_bytes(f"{features}/_MANIFEST.json"))["classes"]
    assert meta_doc["mel_fingerprint"] == MelConfig().fingerprint
    assert meta_doc["crop_frames"] == 64
    norm = meta_doc["normalisation"]
    assert norm["mode"] == "global" and norm["std"] > 1  # dB statistics of the training fold
    assert meta_doc["metrics"]["lwlrap"] == pytest.approx(result.best_lwlrap)
    assert meta_doc["metrics"]["best_epoch"] == result.best_epoch
    # The default recipe trained on the noisy split too (this store has 20 noisy clips).
    config = meta_doc["metrics"]["config"]
    assert (config["noisy"], config["noisy_smoothing"], config["pad"]) == ("mix", 0.2, "silence")
    assert result.history[0]["samples"] > len(read_oof(str(out))) * 4  # > the 80 curated
    meta, model = load_model(str(out / "model"))
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 128, 64))
    assert logits.shape == (2, len(meta.classes))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lwlrap"] == pytest.approx(max(h["lwlrap"] for h in result.history))


@pytest.mark.bad_input
def test_the_reported_lwlrap_is_the_exported_models(drilled_run, features):
    from fatlib.core.metrics import lwlrap
    from fatlib.core.scoring import combine, tta_logits
    from fatlib.io.feature_store import read_split_table

    out, result = drilled_run  # 2 workers: each rank used to validate with its own BN stats
    meta, model = load_model(str(out / "model"))
    valid = set(read_oof(str(out))["fname"])
    rows = read_split_table(features, "train_curated").to_pydict()
    keep = [i for i, f in enumerate(rows["fname"]) if f in valid]
    rows = {k: [v[i] for i in keep] for k, v in rows.items()}
    stats = np.stack([rows[name] for name in CLIP_STATS], 1).astype(np.float32)
    with torch.no_grad():
        logits = tta_logits(model.eval(), rows["logmel"], rows["n_frames"], stats,
                            meta.normalisation, meta.mel.n_mels, meta.crop_frames, 2,
                            torch.device("cpu"))
    truth = multi_hot(rows["labels"], meta.classes)
    assert len(keep) == len(valid) > 0
    assert lwlrap(truth, combine(logits)) == pytest.approx(result.best_lwlrap, abs=1e-4)


def test_global_normalisation_is_the_training_clips_db_mean_and_std(features, tmp_path):
    from fatlib.core.features import decode_logmel
    from fatlib.io.feature_store import read_split_table
    from fatlib.stages.train.inputs import training_inputs

    cfg = _cfg(features, tmp_path / "run", normalisation="global")
    inputs = training_inputs(cfg)  # from the stored per-clip stats, no log-mel read
    rows = read_split_table(features, "train_curated").to_pylist()
    values = np.concatenate([decode_logmel(r["logmel"], 128, r["n_frames"]).ravel()
                             for r in rows if r["fname"] not in inputs.valid_names])
    assert inputs.norm.mean == pytest.approx(values.astype(np.float64).mean(), rel=1e-5)
    assert inputs.norm.std == pytest.approx(values.astype(np.float64).std(), rel=1e-4)
    old = downgrade_store(Path(features), tmp_path / "old")  # no stats: log-mels sampled
    legacy = training_inputs(replace(cfg, features=str(old))).norm
    assert (legacy.mean, legacy.std) == pytest.approx((inputs.norm.mean, inputs.norm.std),
                                                      rel=1e-4)


def test_stopped_run_continues_with_resume(features, tmp_path):
    out = tmp_path / "stopped"
    # With a weight average: the resumed run continues both the network and its average.
    cfg = _cfg(features, out, workers=1, epochs=2, max_failures=0, fail_after_epoch=1, ema=1.0)
    with pytest.raises(Exception):  # noqa: B017 - the crash surfaces as Ray's own error type
        train(cfg)
    [crashed] = [torch.load(p, weights_only=False) for p in out.glob("checkpoint_*/state.pt")]
    with pytest.raises(RunDirError, match="--resume"):
        train(replace(cfg, fail_after_epoch=None))
    reports = tmp_path / "reports.txt"

    class RecordReports(ray.train.UserCallback):  # runs in Ray Train's controller process
        def after_report(self, run_context, metrics, checkpoint):
            with open(reports, "a") as f:
                f.write(f"{metrics[0]['epoch']}\n")

    resumed = train(replace(cfg, fail_after_epoch=None, resume=True),
                    callbacks=(RecordReports(),))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # Epoch 1 was continued from the crashed run's checkpoint, not trained again.
    assert resumed.history[0] == crashed["history"][0]
    # The finished epoch is replayed first, so a resumed Tune trial sees the whole run.
    assert reports.read_text().split() == ["1", "2"]
    norm = json.loads((out / "model" / "meta.json").read_text())["normalisation"]
    assert norm["mode"] == "color"  # the default input: the seed's colour mapping
    # The exported model is the validated average, not the network the optimizer moved.
    states = [torch.load(p, weights_only=False) for p in out.glob("checkpoint_*/state.pt")]
    assert sorted(s["epoch"] for s in states) == [1, 2]
    best = next(s for s in states if s["epoch"] == resumed.best_epoch)
    steps = json.loads((out / "metrics.json").read_text())["steps_per_epoch"]
    assert best["updates"] == best["epoch"] * steps  # one update per optimizer step
    _, model = load_model(str(out / "model"))
    exported = model.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in best["model"].items())
    assert not torch.equal(exported["fc.weight"], best["trained"]["fc.weight"])


def test_seed_recipe_with_noisy_mix_writes_its_run_to_s3(features, s3_bucket):
    out = f"{s3_bucket}/runs/seed"
    result = train(_cfg(features, out, workers=1, epochs=1, recipe="seed", noisy="mix"))
    meta = json.loads(storage.read_bytes(f"{out}/model/meta.json"))
    assert meta["recipe"] == "seed" and meta["in_channels"] == 3
    assert meta["normalisation"]["mode"] == "color"
    assert result.artifact == f"{out}/model"
    assert storage.is_file(f"{out}/model/weights.pt") and storage.is_file(f"{out}/history.csv")


@pytest.mark.bad_input
def test_other_fingerprint_is_refused_before_training(features, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(features, other)
    manifest = json.loads((other / "_MANIFEST.json").read_text())
    manifest["fingerprint"] = "0123456789abcdef"
    (other / "_MANIFEST.json").write_text(json.dumps(manifest))
    expected = "0123456789abcdef.*expects " + MelConfig().fingerprint
    with pytest.raises(FeatureStoreError, match=expected):
        train(_cfg(str(other), tmp_path / "run"))


def test_both_recipes_pad_short_clips_with_silence_unless_asked():
    assert TrainConfig(features="f", out="o").pad == "silence"
    assert TrainConfig(features="f", out="o", recipe="seed").pad == "silence"
    assert TrainConfig(features="f", out="o", pad="wrap").pad == "wrap"


def test_the_default_recipe_mixes_in_the_noisy_split_with_soft_targets():
    default, seed = TrainConfig(features="f", out="o"), TrainConfig(features="f", out="o",
                                                                     recipe="seed")
    assert default.with_noisy(store_has_noisy=True).noisy == "mix"
    assert default.with_noisy(store_has_noisy=False).noisy == "off"  # a store without one
    assert default.smoothing == 0.2
    assert seed.with_noisy(store_has_noisy=True).noisy == "off" and seed.smoothing == 0.0
    chosen = TrainConfig(features="f", out="o", noisy="off", noisy_smoothing=0.0)
    assert chosen.with_noisy(store_has_noisy=True).noisy == "off" and chosen.smoothing == 0.0


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "kwargs, message",
    [({"recipe": "seed", "mixup": 0.4}, "seed recipe has no mixup"),
     ({"fold": 5, "n_folds": 5}, "fold"),
     ({"arch": "resnet50"}, "arch must be one of"),
     ({"resized_crop": 1.0}, "resized crop must be in"),
     ({"recipe": "seed", "resized_crop": 0.2}, "seed recipe has no.*resized crops"),
     ({"recipe": "seed", "freq_shift": 4}, "seed recipe has no.*frequency shifts"),
     ({"recipe": "seed", "ema": 2.0}, "seed recipe has no.*weight averaging"),
     ({"recipe": "seed", "pad": "wrap"}, "seed recipe has no.*wrap padding"),
     ({"recipe": "seed", "centre_bands": True}, "seed recipe has no.*band centring")],
)
def test_bad_settings_are_named(features, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        train(_cfg(features, tmp_path / "run", **kwargs))


@pytest.mark.bad_input
def test_too_few_clips_for_the_folds(features, tmp_path):
    with pytest.raises(FeatureStoreError, match="too few for 60 folds"):
        train(_cfg(features, tmp_path / "run", fold=0, n_folds=60))


def test_run_report_shows_only_files_that_exist(drilled_run, features):
    import re

    from fatlib.report.run_report import write_report

    out, _ = drilled_run
    report = write_report(str(out), features)
    assert report.html == str(out / "report.html")
    page = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all((out / ref).is_file() for ref in refs)
    assert {"batch.png", "curves.png", "per_class.png", "filters.png", "gradcam_0.png",
            "spectrogram_0.png"} <= set(refs)
    assert "http" not in page  # self-contained: nothing fetched from elsewhere


def test_a_store_written_before_clip_stats_still_trains(features, tmp_path):
    old = downgrade_store(Path(features), tmp_path / "old")
    result = train(_cfg(str(old), tmp_path / "run", workers=1, epochs=1, noisy="mix"))
    assert result.history[0]["samples"] > 0 and 0 < result.best_lwlrap <= 1


def test_shuffled_batches_cover_every_row_once_in_a_new_seeded_order(ray_local):
    import numpy as np
    import ray.data

    from fatlib.stages.train.datasets import shuffled_batches

    shard = _Renamed(ray.data.range(103, override_num_blocks=5).materialize().iterator())

    def epoch(seed):
        return [b["id"] for b in shuffled_batches(shard, 10, np.random.default_rng(seed), 4)]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert [len(b) for b in first] == [10] * 10 + [3]  # only the last batch is short
    assert sorted(np.concatenate(first)) == list(range(103))  # every row exactly once
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


class _Renamed:
    """A DataIterator whose batches also carry the id column as "fname"."""

    def __init__(self, iterator):
        self.iterator = iterator

    def iter_batches(self, **kwargs):
        for batch in self.iterator.iter_batches(**kwargs):
            yield {**batch, "fname": batch["id"]}


def test_every_recipe_option_trains_and_lands_in_the_artifact(features, tmp_path):
    out = tmp_path / "options"
    train(_cfg(features, out, workers=1, epochs=1, arch="resnet18-timepool", pad="random",
               deltas=True, noisy="mix", noisy_smoothing=0.1, mixup=0.4, specaugment=True,
               freq_shift=2, normalisation="clip", centre_bands=True))
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["arch"] == "resnet18-timepool" and meta["in_channels"] == 3
    assert meta["normalisation"]["deltas"] is True and meta["normalisation"]["centre_bands"]
    assert meta["metrics"]["config"]["noisy_smoothing"] == 0.1
    assert meta["metrics"]["config"]["freq_shift"] == 2
    _, model = load_model(str(out / "model"))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 50)).shape[1] == len(meta["classes"])


@pytest.mark.bad_input
def test_a_resource_shortfall_fails_fast_and_ctrl_c_stops_a_run(features, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    base = [sys.executable, "jobs/train.py", "--features", features, "--no-report",
            "--batch-size", "16", "--crop-frames", "64"]
    # The tester's hang: 3 one-CPU workers on a 2-CPU machine waited for ever.
    with pytest.raises(ResourceError) as short:
        train(_cfg(features, tmp_path / "a", workers=3, cpus_per_worker=1.0))
    assert str(short.value) == (
        "training (3 workers) asks for 3 x {CPU 1} but the cluster has CPU 2 in 1 node(s); "
        "1 of 3 cannot be placed")
    # Ctrl-C while the run trains: the job and its embedded Ray are gone within 10 s. SIGINT
    # set back to its default in the child: a shell's background jobs inherit it ignored.
    run = subprocess.Popen([*base, "--out", str(tmp_path / "b"), "--epochs", "50"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (tmp_path / "b").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    run.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = run.communicate(timeout=60)
    assert time.monotonic() - sent <= 10
    assert run.returncode == 130 and err.strip().splitlines()[-1] == "train: interrupted"
