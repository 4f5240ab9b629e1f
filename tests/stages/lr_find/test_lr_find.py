"""The LR range test and the train.py command line a tuning result prints (no Ray needed)."""

import shlex

import numpy as np
import torch

from fatlib.core.models import build_model
from fatlib.stages.lr_find.sweep import lr_range_test
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.tune.config import train_command


def test_train_command_reproduces_settings():
    cfg = TrainConfig(features="s3://b/f", out="runs/x", lr=0.004, crop_frames=256, mixup=0.2,
                      specaugment=True, epochs=7, fold=2, n_folds=5)
    args = shlex.split(train_command(cfg))
    assert args[:2] == ["python", "jobs/train.py"]
    pairs = dict(zip(args[2::2], args[3::2], strict=False))
    assert pairs["--lr"] == "0.004" and pairs["--crop-frames"] == "256"
    assert pairs["--mixup"] == "0.2" and pairs["--fold"] == "2/5" and "--specaugment" in args


def test_lr_range_test_suggests_inside_the_sweep_and_restores_the_model():
    torch.manual_seed(0)
    model = build_model("resnet18", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 32, 32)
    y = (torch.rand(8, 4) < 0.3).float()
    x[:, 0, :8] += 2 * y[:, :1, None]
    batches = ((x, y, torch.ones(8)) for _ in range(40))
    result = lr_range_test(model, batches, start=1e-6, end=10.0, steps=40)
    assert 1e-6 <= result.steepest <= 10 and 1e-7 <= result.min_over_10 <= 1
    assert np.isfinite(result.steepest) and len(result.lrs) == len(result.smoothed) <= 40
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
