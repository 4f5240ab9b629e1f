"""Single training runs on the session's small store: a stopped run resumed, the seed recipe
on S3, every recipe option (noisy warm-up among them), a run that replaces one that failed
before its first checkpoint. (The learning drill and the runs beside it: test_train.py.)"""

import json
from dataclasses import replace

import numpy as np
import pytest
import ray.train
import torch

from fatlib.io import storage
from fatlib.io.artifact import load_model
from fatlib.io.feature_store import FeatureStoreError
from fatlib.stages.train.checkpoints import REGISTERED
from fatlib.stages.train.config import RunDirError
from fatlib.stages.train.driver import train
from fatlib.stages.train.run_dir import RUN_CONFIG
from tests.conftest import SMALL_STORE
from tests.stages.train.settings import one_cycle_lr, train_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def features(small_store):
    """small_store's feature store: 24 curated clips (10 noisy) of up to 1.5 s."""
    return str(small_store / "features")


def test_stopped_run_continues_with_resume(features, tmp_path):
    out = tmp_path / "stopped"
    # With a weight average: the resumed run continues both the network and its average.
    cfg = train_cfg(features, out, workers=1, epochs=2, max_failures=0,
               fail_after_epoch=1, ema=1.0)
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
    exported = model.network.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in best["model"].items())
    assert not torch.equal(exported["fc.weight"], best["trained"]["fc.weight"])

def test_seed_recipe_with_noisy_mix_writes_its_run_to_s3(features, s3_bucket):
    out = f"{s3_bucket}/runs/seed"
    result = train(train_cfg(features, out, workers=1, epochs=1, recipe="seed", noisy="mix"))
    meta = json.loads(storage.read_bytes(f"{out}/model/meta.json"))
    assert meta["recipe"] == "seed" and meta["in_channels"] == 3
    assert meta["normalisation"]["mode"] == "color"
    assert result.artifact == f"{out}/model"
    assert storage.is_file(f"{out}/model/weights.pt") and storage.is_file(f"{out}/history.csv")

def test_every_recipe_option_trains_and_lands_in_the_artifact(features, tmp_path):
    from fatlib.stages.train.inputs import training_inputs

    # One run for every option (a Train run's fixed cost is most of a test's here), noisy
    # warm-up among them; noisy mixing is the seed recipe's test's.
    out = tmp_path / "options"
    cfg = train_cfg(features, out, workers=1, epochs=3, arch="resnet18-timepool", pad="random",
                    deltas=True, noisy="warmup", noisy_warmup=1, noisy_smoothing=0.1, mixup=0.4,
                    specaugment=True, sound_mix=0.5, sound_mix_overlap=True,
                    sound_mix_sources=3, freq_shift=2, shift_sources=True,
                    normalisation="clip", centre_bands=True)
    result = train(cfg)
    # Epoch 1 is one pass over train_noisy, then the curated training fold.
    samples = [h["samples"] for h in result.history]
    curated = SMALL_STORE["n_curated"] - len(training_inputs(cfg).valid_names)
    assert samples == [SMALL_STORE["n_noisy"], curated, curated]
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    # One one-cycle schedule over the noisy and the curated steps (1 + 2 x 2 of 16 clips), not
    # one counting curated steps only (3 x 2): each epoch ends at that schedule's LR.
    steps = np.cumsum([-(-n // cfg.batch_size) for n in samples])
    assert [h["lr"] for h in result.history] == pytest.approx(
        [one_cycle_lr(cfg.lr, int(steps[-1]), int(k)) for k in steps])
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["arch"] == "resnet18-timepool" and meta["in_channels"] == 3
    assert meta["normalisation"]["deltas"] is True and meta["normalisation"]["centre_bands"]
    config = meta["metrics"]["config"]
    assert (config["noisy"], config["noisy_warmup"], config["noisy_smoothing"]) == (
        "warmup", 1, 0.1)
    assert (config["mixup"], config["specaugment"], config["sound_mix"],
            config["sound_mix_overlap"], config["sound_mix_sources"], config["freq_shift"],
            config["shift_sources"], config["pad"]) == (0.4, True, 0.5, True, 3, 2, True, "random")
    _, model = load_model(str(out / "model"))
    with torch.no_grad():
        assert model(torch.zeros(1, 128, 50), torch.ones(1, 4)).shape[1] == len(meta["classes"])


@pytest.mark.bad_input
def test_a_run_that_failed_before_its_first_checkpoint_does_not_hold_its_out(features, tmp_path,
                                                                            capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FeatureStoreError, match="too few"):  # fails once the run dir is open
        train(train_cfg(features, out, n_folds=60))
    assert (out / RUN_CONFIG).is_file()
    # What Ray Train and the fault drill leave when a run dies in its first epoch.
    (out / REGISTERED).write_text("{}")
    (out / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    (out / ".fault-drill-done").write_text("1")
    with pytest.raises(RunDirError, match="no run to resume .*run again without --resume$"):
        train(train_cfg(features, out, resume=True))
    capsys.readouterr()
    result = train(train_cfg(features, out, workers=1, epochs=1))
    assert f"{out}: replacing an unfinished run" in capsys.readouterr().err
    assert result.best_epoch == 1 and (out / "model" / "meta.json").is_file()
    assert (out / "notes.txt").read_text() == "mine"  # not the run's: kept
    assert not (out / "checkpoint_2026-01-01_00-00-00.000000").exists()
    assert not (out / ".fault-drill-done").exists()
    assert json.loads((out / RUN_CONFIG).read_text())["n_folds"] == 5  # this run's settings
