"""A run directory before Ray starts: --resume refuses a run an older fatlib wrote, in one line."""

import json

import pytest
import torch

from fatlib.stages.train.checkpoints import REGISTERED, STATE_FILE, config_dict
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.run_dir import RUN_CONFIG, open_run_dir


@pytest.mark.bad_input
def test_resume_refuses_a_run_without_recorded_settings(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "meta.json").write_text("{}")  # a finished run, settings unrecorded
    with pytest.raises(RunDirError) as refused:
        open_run_dir(TrainConfig(features="store", out=str(tmp_path), resume=True))
    assert str(refused.value) == (f"{tmp_path}: a run from an older fatlib (no {RUN_CONFIG}), "
                                  "no longer resumed; start a new run in another --out")


@pytest.mark.bad_input
def test_resume_refuses_checkpoints_without_validation_scores(tmp_path):
    cfg = TrainConfig(features="store", out=str(tmp_path), resume=True)
    (tmp_path / RUN_CONFIG).write_text(json.dumps(config_dict(cfg)))
    checkpoint = tmp_path / "checkpoint_2026-01-01_00-00-00.000000"
    checkpoint.mkdir()
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1, "history": []},
               checkpoint / STATE_FILE)  # as fatlib saved them before out-of-fold scores
    (tmp_path / REGISTERED).write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": checkpoint.name}}))
    with pytest.raises(RunDirError) as refused:
        open_run_dir(cfg)
    assert str(refused.value) == (f"{tmp_path}: its checkpoints are from an older fatlib (no "
                                  "validation scores), no longer resumed; start a new run in "
                                  "another --out")


def test_checkpoint_staging_of_killed_workers_is_removed_and_a_live_ones_kept(tmp_path):
    import subprocess

    from fatlib.stages.train import checkpoints
    from fatlib.stages.train.checkpoints import STAGING_PREFIX, staging_prefix

    gone = subprocess.Popen(["true"])
    gone.wait()  # a worker killed while Ray copied its checkpoint: its folder stays
    elsewhere = staging_prefix(gone.pid).split("-")
    elsewhere[3] = "0" * len(elsewhere[3])  # the same dead pid in another container's /tmp
    names = [f"{staging_prefix(gone.pid)}x1", f"{staging_prefix()}x2", "-".join(elsewhere) + "x3",
             f"{STAGING_PREFIX}{gone.pid}-x4",  # no process space: judged by nobody
             f"{STAGING_PREFIX}notapid",
             "checkpoint_2026-01-01"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / STATE_FILE).write_bytes(b"state")
    assert checkpoints.remove_orphan_staging(str(tmp_path)) == [names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
