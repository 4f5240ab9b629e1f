"""LR range test, as fastai's lr_find(): an exponential LR sweep over training batches.

`lr_range_test` is pure torch (any model, any batches); `find_lr` runs it on a feature store's
training fold with the training stage's own batches, writes the plot and leaves no trace on
the model.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fatlib import storage
from fatlib.config import ConfigError
from fatlib.feature_store import read_split_table
from fatlib.models import build_model
from fatlib.train import TrainConfig, training_batch, training_inputs


@dataclass
class LRFinderResult:
    """The sweep: LRs tried, raw and smoothed losses, and the two usual suggestions."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    steepest: float  # LR where the smoothed loss falls fastest (per log-LR)
    min_over_10: float  # LR of the lowest smoothed loss, divided by 10
    diverged: bool
    plot: str = ""

    def summary(self) -> str:
        """One line with both suggestions."""
        stop = "stopped at divergence" if self.diverged else "full sweep"
        return (f"LR range test over {len(self.lrs)} steps ({stop}): suggested LR "
                f"{self.steepest:.2e} (steepest descent), {self.min_over_10:.2e} (min / 10)"
                + (f"; plot: {self.plot}" if self.plot else ""))


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
            per_clip = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x), y, reduction="none").mean(dim=1)
            loss = (per_clip * w).sum() / w.sum()
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


def plot_lr_find(result: LRFinderResult, uri: str) -> None:
    """PNG: raw and smoothed loss against LR (log axis), both suggestions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    ax.axvline(result.steepest, color="tab:red", linestyle="--",
               label=f"steepest {result.steepest:.1e}")
    ax.axvline(result.min_over_10, color="tab:green", linestyle=":",
               label=f"min/10 {result.min_over_10:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = np.nanpercentile(result.smoothed, 95) * 1.5
    ax.set_ylim(0, top if np.isfinite(top) and top > 0 else None)
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    storage.write_bytes(uri, buffer.getvalue())


def find_lr(cfg: TrainConfig, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            plot: str | None = None) -> LRFinderResult:
    """LR range test of a fresh model on the store's training fold, with the stage's batches."""
    inputs = training_inputs(cfg)
    model = build_model(cfg.arch, len(inputs.classes), in_channels=inputs.norm.channels)
    rows = _training_rows(cfg, inputs.valid_names)
    rng = np.random.default_rng(cfg.seed)
    index = {c: i for i, c in enumerate(inputs.classes)}
    batches = (training_batch(b, cfg, inputs.norm, index, rng)
               for b in _cycle(rows, cfg.batch_size, rng))
    result = lr_range_test(model, batches, start=start, end=end, steps=steps)
    if plot:
        plot_lr_find(result, plot)
        result.plot = plot
    return result


def _training_rows(cfg: TrainConfig, valid_names: set[str]) -> dict[str, np.ndarray]:
    """The training fold's rows as columns (fname, labels, n_frames, logmel, weight)."""
    names = ["fname", "labels", "n_frames", "logmel"]
    table = read_split_table(cfg.features, "train_curated", cfg.mel, columns=names)
    columns = {name: table.column(name).to_pylist() for name in names}
    keep = np.array([f not in valid_names for f in columns["fname"]])
    out = {name: np.array(values, dtype=object)[keep] for name, values in columns.items()}
    out["n_frames"] = out["n_frames"].astype(np.int64)
    out["weight"] = np.ones(int(keep.sum()), dtype=np.float32)
    return out


def _cycle(rows: dict[str, np.ndarray], batch_size: int, rng) -> Iterator[dict]:
    """Endless shuffled batches over the rows (a sweep may need more than one epoch)."""
    n = len(rows["fname"])
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            take = order[i : i + batch_size]
            yield {name: values[take] for name, values in rows.items()}
