"""LR range test, as fastai's lr_find(): an exponential LR sweep over training batches.

`lr_range_test` is pure torch (any model, any batches); `find_lr` runs it on a feature store's
training fold with the training stage's own batches and leaves no trace on the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np
import torch

from fatlib.core.bounds import check_bounds
from fatlib.core.config import ConfigError
from fatlib.core.inputs import training_batch
from fatlib.core.losses import weighted_bce
from fatlib.core.models import build_model
from fatlib.io import storage
from fatlib.io.feature_rows import feature_columns
from fatlib.io.feature_store import FeatureStore
from fatlib.stages.lr_find.config import LRFinderResult, SweepSettings
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.train.inputs import input_spec, training_inputs


def lr_range_test(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
) -> LRFinderResult:
    """Train for `steps` batches with LR growing from start to end; the model is restored after.

    Stops early once the smoothed loss exceeds `diverge` x its best value.
    """
    if not 0 < start < end or steps < 3:
        raise ConfigError("LR range test: need 0 < start < end and at least 3 steps")
    saved = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=start)
    schedule = np.geomspace(start, end, steps)
    lrs, losses, smoothed = [], [], []
    average, best, diverged = 0.0, float("inf"), False
    model.train()
    try:
        for step, (lr, (x, y, w)) in enumerate(zip(schedule, batches, strict=False)):
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
            loss = weighted_bce(model(x), y, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            average = beta * average + (1 - beta) * loss.item()
            value = average / (1 - beta ** (step + 1))  # bias-corrected moving average
            lrs.append(float(lr))
            losses.append(loss.item())
            smoothed.append(value)
            best = min(best, value)
            if not np.isfinite(value) or (step > 0 and value > diverge * best):
                diverged = True
                break
    finally:
        model.load_state_dict(saved)
    return LRFinderResult(lrs, losses, smoothed, *suggestions(lrs, smoothed), diverged=diverged)


def suggestions(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(steepest-descent LR, LR of the minimum / 10) of a smoothed loss curve."""
    values = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(values)
    lr = np.asarray(lrs)[finite]
    values = values[finite]
    if len(values) < 3:
        raise ConfigError("LR range test: the loss diverged at once; lower --start")
    slope = np.gradient(values, np.log(lr))
    # The last points are where divergence starts; they are never the answer.
    usable = max(2, len(values) - max(1, len(values) // 10))
    return float(lr[:usable][np.argmin(slope[:usable])]), float(lr[np.argmin(values)] / 10)


def find_lr(cfg: TrainConfig, sweep: SweepSettings = SweepSettings()) -> LRFinderResult:
    """LR range test of a fresh model on the store's training fold, with the stage's batches."""
    check_bounds(sweep)  # a sweep built in code gets the checks its flags get
    if sweep.start >= sweep.end:
        raise ConfigError(f"--start {sweep.start:g} must be below --end {sweep.end:g}")
    cfg = replace(cfg, features=storage.absolute(cfg.features))
    storage.check_uri(sweep.plot)
    inputs = training_inputs(cfg)
    cfg = cfg.with_recipe(inputs.store.has("train_noisy"))  # the batches its training makes
    model = build_model(cfg.arch, len(inputs.classes), in_channels=inputs.norm.channels)
    rows = _training_rows(inputs.store, inputs.valid_names)
    rng = np.random.default_rng(cfg.seed)
    spec = input_spec(cfg, inputs.norm)
    batches = (training_batch(b, spec, inputs.classes, rng)
               for b in _cycle(rows, cfg.batch_size, rng))
    return lr_range_test(model, batches, start=sweep.start, end=sweep.end, steps=sweep.steps)


def _training_rows(store: FeatureStore, valid_names: set[str]) -> dict[str, np.ndarray]:
    """The training fold's rows as columns (fname, labels, n_frames, logmel, stats, weight)."""
    columns = feature_columns(store.table("train_curated"))
    keep = ~np.isin(columns["fname"], sorted(valid_names))
    return {name: values[keep] for name, values in columns.items()}


def _cycle(rows: dict[str, np.ndarray], batch_size: int, rng) -> Iterator[dict]:
    """Endless shuffled batches over the rows (a sweep may need more than one epoch)."""
    n = len(rows["fname"])
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            take = order[i : i + batch_size]
            yield {name: values[take] for name, values in rows.items()}
