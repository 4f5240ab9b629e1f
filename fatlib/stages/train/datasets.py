"""The training stage's Ray Data: the curated split (and noisy one) as training and validation
datasets, rows fname / labels / n_frames / logmel / the clip's dB stats / weight."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import ray.data

from fatlib.core.features import CLIP_STATS
from fatlib.io import storage
from fatlib.io.dataset import ManifestError, read_truth
from fatlib.io.feature_store import FeatureStore
from fatlib.stages.store_dataset import split_dataset
from fatlib.stages.train.config import TrainConfig

# Rows a training worker permutes at once: a window of this many batches, read ahead by Ray Data.
# Ray's local shuffle buffer capped the iterator at ~6,900 rows/s (issue 13); one permutation
# of a window costs next to nothing.
WINDOW_BATCHES = 16

# Loading the store is I/O-bound and brief; fractional CPUs let it run beside training workers
# that hold whole CPUs (concurrent Tune trials on a small cluster would otherwise wait forever).
LOADING_CPUS = 0.25


def training_datasets(cfg: TrainConfig, store: FeatureStore,
                      valid_names: set[str]) -> dict[str, ray.data.Dataset]:
    """Materialised "train" and "valid" datasets of the store, and "noisy" (train_noisy alone)
    with --noisy warmup; materialised so no read task waits for a CPU the training workers
    hold."""
    curated = _read_split_dataset(store, "train_curated")
    valid = sorted(valid_names)
    noisy_labels = _noisy_labels(cfg, store) if cfg.noisy in ("mix", "warmup") else None

    def select(ds: ray.data.Dataset, names: list[str], keep: bool, weight: float, noisy: bool):
        return ds.map_batches(_select, fn_kwargs={"names": names, "keep": keep, "weight": weight,
                                                  "noisy": noisy,
                                                  "labels": noisy_labels if noisy else None},
                              batch_format="numpy", num_cpus=LOADING_CPUS)

    train_ds = select(curated, valid, False, 1.0, False)
    valid_ds = select(curated, valid, True, 1.0, False)
    datasets = {"train": train_ds, "valid": valid_ds}
    if cfg.noisy == "mix":
        datasets["train"] = train_ds.union(select(_read_split_dataset(store, "train_noisy"), [],
                                                  False, cfg.noisy_weight, True))
    elif cfg.noisy == "warmup":  # alone in its epochs: full weight, soft targets still apply
        datasets["noisy"] = select(_read_split_dataset(store, "train_noisy"), [], False, 1.0,
                                   True)
    return {name: ds.materialize() for name, ds in datasets.items()}


def shuffled_batches(shard, batch_size: int, rng: np.random.Generator,
                     window_batches: int = WINDOW_BATCHES) -> Iterator[dict]:
    """A worker's shard as numpy batches of batch_size rows in a new, seeded order each epoch:
    windows of window_batches batches, each permuted as a whole; the rows left over from a
    window join the next one, so only the epoch's last batch may be short."""
    pending: dict | None = None
    for window in shard.iter_batches(batch_size=batch_size * window_batches,
                                     batch_format="numpy", prefetch_batches=1):
        if pending is not None:
            window = {k: np.concatenate([pending[k], v]) for k, v in window.items()}
        order = rng.permutation(len(window["fname"]))
        full = len(order) - len(order) % batch_size
        for i in range(0, full, batch_size):
            take = order[i : i + batch_size]
            yield {k: v[take] for k, v in window.items()}
        pending = {k: v[order[full:]] for k, v in window.items()}
    if pending is not None and len(pending["fname"]):
        yield pending


def _read_split_dataset(store: FeatureStore, split: str) -> ray.data.Dataset:
    """A committed split's rows, the columns training reads."""
    return split_dataset(store, split, ["fname", "labels", "n_frames", "logmel", *CLIP_STATS],
                         num_cpus=LOADING_CPUS)


def _noisy_labels(cfg: TrainConfig, store: FeatureStore) -> dict[str, list[str]] | None:
    """--noisy-labels as fname -> class names of the store's vocabulary; None when unset."""
    if cfg.noisy_labels is None:
        return None
    uri = storage.absolute(cfg.noisy_labels)
    labels = read_truth(uri)
    if labels is None:
        raise ManifestError(f"{uri}: --noisy-labels file not found")
    classes = set(store.classes)
    for fname, names in labels.items():
        unknown = [name for name in names if name not in classes]
        if unknown or not names:
            raise ManifestError(f"{uri}: {fname} has " + (
                f"label {unknown[0]!r}, not in the feature store's class vocabulary"
                if unknown else "no label"))
    stored = store.table("train_noisy", columns=["fname"])
    if not set(stored.column("fname").to_pylist()) & labels.keys():
        # Else --noisy warmup would warm up on nothing and --noisy mix add nothing, silently.
        raise ManifestError(f"{uri}: lists none of train_noisy's {stored.num_rows} clips: no "
                            "noisy clip to train on")
    return labels


def _select(batch: dict, names: list[str], keep: bool, weight: float, noisy: bool,
            labels: dict[str, list[str]] | None = None) -> dict:
    """Rows whose fname is (keep) or is not (not keep) in names, with loss-weight and noisy
    columns; with labels (fname -> class names), only the rows it lists, with those labels."""
    mask = np.isin(batch["fname"], names)
    mask = mask if keep else ~mask
    if labels is not None:
        mask &= np.isin(batch["fname"], list(labels))
    out = {key: value[mask] for key, value in batch.items()}
    if labels is not None:  # an object array of arrays, as Ray Data hands the stored lists
        out["labels"] = np.empty(int(mask.sum()), dtype=object)
        for i, fname in enumerate(out["fname"]):
            out["labels"][i] = np.array(labels[fname], dtype=object)
    out["weight"] = np.full(int(mask.sum()), weight, dtype=np.float32)
    out["noisy"] = np.full(int(mask.sum()), noisy)
    return out
