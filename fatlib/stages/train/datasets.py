"""The training stage's Ray Data: the curated split (and noisy one) as training and validation
datasets, rows fname / labels / n_frames / logmel / weight."""

from __future__ import annotations

import numpy as np
import ray.data

from fatlib.io.feature_store import split_paths
from fatlib.stages.train.config import TrainConfig

# Loading the store is I/O-bound and brief; fractional CPUs let it run beside training workers
# that hold whole CPUs (concurrent Tune trials on a small cluster would otherwise wait forever).
LOADING_CPUS = 0.25


def training_datasets(cfg: TrainConfig,
                      valid_names: set[str]) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Materialised training and validation datasets; materialised so no read task waits for a
    CPU the training workers hold."""
    curated = _read_split_dataset(cfg, "train_curated")
    valid = sorted(valid_names)

    def select(ds: ray.data.Dataset, names: list[str], keep: bool, weight: float):
        return ds.map_batches(_select, fn_kwargs={"names": names, "keep": keep, "weight": weight},
                              batch_format="numpy", num_cpus=LOADING_CPUS)

    train_ds = select(curated, valid, False, 1.0)
    valid_ds = select(curated, valid, True, 1.0)
    if cfg.noisy == "mix":
        train_ds = train_ds.union(select(_read_split_dataset(cfg, "train_noisy"), [], False,
                                         cfg.noisy_weight))
    return train_ds.materialize(), valid_ds.materialize()


def _read_split_dataset(cfg: TrainConfig, split: str) -> ray.data.Dataset:
    """A committed split's Parquet files (exactly those the manifest lists) as a Dataset."""
    fs, paths = split_paths(cfg.features, split, cfg.mel)
    ds = ray.data.read_parquet(paths, filesystem=fs, num_cpus=LOADING_CPUS)
    return ds.select_columns(["fname", "labels", "n_frames", "logmel"])


def _select(batch: dict, names: list[str], keep: bool, weight: float) -> dict:
    """Rows whose fname is (keep) or is not (not keep) in names, with a loss-weight column."""
    mask = np.isin(batch["fname"], names)
    mask = mask if keep else ~mask
    out = {key: value[mask] for key, value in batch.items()}
    out["weight"] = np.full(int(mask.sum()), weight, dtype=np.float32)
    return out
