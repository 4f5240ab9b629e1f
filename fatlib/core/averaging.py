"""An exponential moving average of a network's weights (the copy that is validated and kept).

Averaging the weights of the last few hundred optimizer steps smooths the noise of the last
steps' mini-batches (Polyak averaging; timm's ModelEmaV2, PANNs' and several FAT2019 solutions'
"EMA model"). The horizon is given in epochs so that one setting means the same on a 600-clip set
and on a 5,000-clip set.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(horizon_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans about horizon_epochs epochs of steps."""
    if horizon_epochs <= 0 or steps_per_epoch < 1:
        raise ValueError("the averaging horizon and the steps per epoch must be positive")
    return 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)


class WeightAverage:
    """A frozen copy of a network whose weights and buffers follow it as an EMA."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards the model's current weights."""
        self.updates += 1
        # Warm-up (as timm's): the first steps weigh the fresh weights more, so the average is
        # not dominated by the random initialisation when the run is short.
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for mine, current in zip(self.module.state_dict().values(), model.state_dict().values(),
                                 strict=True):
            if mine.dtype.is_floating_point:
                mine.lerp_(current.detach(), 1.0 - decay)
            else:  # counters such as BatchNorm's num_batches_tracked
                mine.copy_(current)

    def state_dict(self) -> dict:
        """The averaged network's weights and the number of updates so far."""
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Continue an average saved with state_dict()."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
