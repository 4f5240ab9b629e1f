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
