"""The weight average: an EMA of parameters and buffers, its decay from epochs, its state."""

import math

import pytest
import torch
from torch import nn

from fatlib.core.averaging import WeightAverage, ema_decay


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_decay_spans_the_requested_epochs_of_steps():
    assert ema_decay(2, 50) == pytest.approx(1 - 1 / 100)
    assert ema_decay(0.01, 10) == 0.0  # a horizon under one step: the average is the model
    with pytest.raises(ValueError, match="positive"):
        ema_decay(0, 10)


def test_average_follows_the_model_as_an_ema_with_warm_up():
    model, decay = _net(), 0.9
    average = WeightAverage(model, decay)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for step in range(1, 31):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        average.update(model)
        d = min(decay, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    torch.testing.assert_close(average.module[0].weight, expected)
    # It lags behind the model but has moved most of the model's 30 x 0.1.
    lag = (model[0].weight - average.module[0].weight).mean().item()
    assert 0.1 < lag < 0.5
    assert not any(p.requires_grad for p in average.module.parameters())


def test_buffers_are_averaged_and_counters_copied():
    model = _net()
    average = WeightAverage(model, 0.5)
    model.train()
    model(torch.randn(8, 3) + 5.0)  # moves BatchNorm's running mean and its batch counter
    average.update(model)
    bn, avg_bn = model[1], average.module[1]
    d = min(0.5, 2 / 11)
    torch.testing.assert_close(avg_bn.running_mean, (1 - d) * bn.running_mean)
    assert int(avg_bn.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_state_round_trip_continues_the_same_average():
    model = _net()
    average = WeightAverage(model, 0.99)
    for _ in range(5):
        average.update(model)
    again = WeightAverage(_net(), 0.99)
    again.load_state_dict(average.state_dict())
    assert again.updates == 5
    for mine, theirs in zip(again.module.state_dict().values(),
                            average.module.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_decay_must_be_below_one():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightAverage(_net(), 1.0)
    assert math.isclose(ema_decay(1, 1), 0.0)
