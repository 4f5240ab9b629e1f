"""Training settings the training-stage tests share."""

import torch

from fatlib.stages.train.config import TrainConfig


def train_cfg(features, out, **kw) -> TrainConfig:
    """A small run's settings: 2 workers, 4 epochs, batches of 16 crops of 64 frames."""
    base = dict(features=features, out=str(out), workers=2, epochs=4, lr=3e-3, batch_size=16,
                crop_frames=64, valid_crops=2, seed=0)
    return TrainConfig(**{**base, **kw})


def one_cycle_lr(max_lr: float, total_steps: int, steps: int) -> float:
    """torch's one-cycle LR (the training loop's schedule) after `steps` optimizer steps of a
    schedule laid out over total_steps."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                   total_steps=total_steps)
    for _ in range(steps):
        optimizer.step()
        schedule.step()
    return schedule.get_last_lr()[0]
