"""What the training driver derives from the feature store before any worker starts: the
classes, the validation fold, the input normalisation and the batch recipe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fatlib.core.augment import compose
from fatlib.core.folds import stratified_folds
from fatlib.core.frontend import Normalisation
from fatlib.core.inputs import InputSpec
from fatlib.core.labels import LabelError, multi_hot
from fatlib.core.mixing import SoundMix
from fatlib.io.feature_store import FeatureStore, FeatureStoreError
from fatlib.stages.train.config import TrainConfig


@dataclass
class TrainingInputs:
    """What the driver derives from the store before training: classes, fold, normalisation."""

    store: FeatureStore  # cfg.features, checked against cfg.mel
    classes: list[str]
    curated: dict  # fname, labels, n_frames, targets of train_curated
    valid_names: set[str]
    norm: Normalisation


def training_inputs(cfg: TrainConfig, store: FeatureStore | None = None) -> TrainingInputs:
    """Validate the store (cfg.features, unless the caller opened it) against cfg, split the
    curated clips, fit the input normalisation."""
    cfg.check()
    if store is None:
        store = FeatureStore.open(cfg.features, cfg.mel)
    classes = store.classes
    curated = _read_labels(store, "train_curated", classes)
    if len(curated["fname"]) < cfg.n_folds * 2:
        raise FeatureStoreError(f"{cfg.features}: train_curated has {len(curated['fname'])} clips, "
                                f"too few for {cfg.n_folds} folds (need >= {cfg.n_folds * 2})")
    folds = stratified_folds(curated["targets"], cfg.n_folds, cfg.seed)
    valid_names = set(np.asarray(curated["fname"])[folds == cfg.fold])
    return TrainingInputs(store, classes, curated, valid_names,
                          _normalisation(cfg, store, curated, valid_names))


def input_spec(cfg: TrainConfig, norm: Normalisation) -> InputSpec:
    """How the worker turns stored rows into batches: crop, scaling, named augmentations."""
    return InputSpec(n_mels=cfg.mel.n_mels, crop_frames=cfg.crop_frames, norm=norm,
                     augment=compose(cfg.augmentations()), pad=cfg.pad,
                     noisy_smoothing=cfg.smoothing, resized_crop=cfg.resized_crop,
                     source_shift=cfg.freq_shift if cfg.shift_sources else 0,
                     mix=SoundMix(cfg.sound_mix, cfg.sound_mix_gain, cfg.sound_mix_overlap,
                                  cfg.sound_mix_sources)
                     if cfg.sound_mix > 0 else None)


def _read_labels(store: FeatureStore, split: str, classes: list[str]) -> dict:
    """fname, labels, n_frames and multi-hot targets of a split (no log-mels)."""
    table = store.table(split, columns=["fname", "labels", "n_frames"])
    fnames = table.column("fname").to_pylist()
    labels = table.column("labels").to_pylist()
    frames = table.column("n_frames").to_pylist()
    if not fnames:
        raise FeatureStoreError(f"{store.root}: split {split} has no clips")
    try:
        targets = multi_hot(labels, classes, names=fnames)
    except LabelError as e:
        raise FeatureStoreError(f"{store.root}/{split}: {e}") from None
    return {"fname": fnames, "labels": labels, "n_frames": frames, "targets": targets}


def _normalisation(cfg: TrainConfig, store: FeatureStore, curated: dict,
                   valid_names: set) -> Normalisation:
    """The seed's per-clip colour mapping, per-clip standardisation, or global dB mean/std."""
    if cfg.recipe == "seed" or cfg.normalisation in ("color", "clip"):
        return Normalisation(mode="color" if cfg.recipe == "seed" else cfg.normalisation,
                             deltas=cfg.deltas, centre_bands=cfg.centre_bands)
    # Exact over every training clip, from the stored per-clip stats (columns only): a clip of
    # n values with mean m and std s adds n m to the sum and n (s^2 + m^2) to the squares.
    table = store.table("train_curated", columns=["fname", "n_frames", "db_mean", "db_std"])
    training = {f for f in curated["fname"] if f not in valid_names}
    keep = np.array([f in training for f in table.column("fname").to_pylist()])
    n = table.column("n_frames").to_numpy().astype(np.float64)[keep] * cfg.mel.n_mels
    m = table.column("db_mean").to_numpy().astype(np.float64)[keep]
    sd = table.column("db_std").to_numpy().astype(np.float64)[keep]
    count, total, total_sq = n.sum(), (n * m).sum(), (n * (sd**2 + m**2)).sum()
    mean = total / count
    return Normalisation(mode="global", mean=float(mean),
                         std=float(np.sqrt(max(total_sq / count - mean**2, 1e-6))),
                         deltas=cfg.deltas, centre_bands=cfg.centre_bands)
