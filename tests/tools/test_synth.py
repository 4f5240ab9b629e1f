"""Synthetic dataset: exact Kaggle layout, deterministic, noisy labels, and learnable classes."""

import csv
import hashlib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fatlib.core.audio import load_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import log_mel
from fatlib.core.labels import multi_hot, parse_labels
from fatlib.core.metrics import lwlrap
from fatlib.tools.synth import SPLITS, SynthConfig, generate_dataset

SMALL = SynthConfig(n_curated=40, n_noisy=30, n_test=20, max_seconds=3.0, sample_rate=22050)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return root, generate_dataset(root, SMALL)


def test_writes_the_kaggle_layout(dataset):
    root, summary = dataset
    for name in ("train_curated.csv", "train_noisy.csv", "test_truth.csv"):
        with open(root / name, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["fname", "labels"]
        assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    submission = pd.read_csv(root / "sample_submission.csv")
    assert list(submission.columns) == ["fname", *summary.classes]
    assert len(summary.classes) >= 8 and (submission[summary.classes] == 0).all().all()
    truth = pd.read_csv(root / "test_truth.csv")
    assert sorted(submission.fname) == sorted(truth.fname)
    for split, csv_name in zip(SPLITS, ("train_curated", "train_noisy", "test_truth"), strict=True):
        names = pd.read_csv(root / f"{csv_name}.csv").fname
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(names)
        assert summary.clips[split] == len(names)


def test_multi_label_fields_are_quoted_and_within_vocabulary(dataset):
    root, summary = dataset
    text = (root / "train_curated.csv").read_text()
    labels = [parse_labels(v) for v in pd.read_csv(root / "train_curated.csv").labels]
    assert {len(x) for x in labels} <= {1, 2, 3} and max(len(x) for x in labels) >= 2
    multi = next(x for x in labels if len(x) > 1)
    assert f'"{",".join(multi)}"' in text
    multi_hot(labels, summary.classes)  # raises on a label outside the vocabulary


def test_clips_have_variable_length_and_silence_at_the_ends(dataset):
    root, _ = dataset
    durations, silent_ends = [], 0
    for path in sorted((root / "train_curated").iterdir()):
        y, sr = sf.read(path)
        durations.append(len(y) / sr)
        silent_ends += int(y[0] == 0 and y[-1] == 0)
    assert SMALL.min_seconds - 0.01 <= min(durations) and max(durations) <= SMALL.max_seconds
    assert np.std(durations) > 0.2
    assert silent_ends >= 0.8 * len(durations)


def test_noisy_split_has_about_the_requested_wrong_labels(dataset):
    _, summary = dataset
    assert summary.wrong_noisy_labels == pytest.approx(SMALL.noisy_label_error, abs=0.03)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    cfg = SynthConfig(n_curated=6, n_noisy=4, n_test=3, max_seconds=1.0, sample_rate=8000)

    def digest(root):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    generate_dataset(tmp_path / "a", cfg)
    generate_dataset(tmp_path / "b", cfg)
    generate_dataset(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 1}))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_refuses_to_overwrite_unless_asked(tmp_path):
    cfg = SynthConfig(n_curated=3, n_noisy=2, n_test=2, max_seconds=1.0, sample_rate=8000)
    generate_dataset(tmp_path, cfg)
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        generate_dataset(tmp_path, cfg)
    summary = generate_dataset(tmp_path, SynthConfig(**{**cfg.__dict__, "n_test": 1}),
                               overwrite=True)
    assert len(list((tmp_path / "test").iterdir())) == summary.clips["test"] == 1


def test_classes_are_learnable_from_log_mels(dataset):
    """A linear model on time-pooled log-mels tags the test split far above chance."""
    root, summary = dataset
    cfg = MelConfig(sample_rate=SMALL.sample_rate, n_mels=64, n_fft=1024, hop_length=256)

    def features_and_targets(csv_name, folder):
        table = pd.read_csv(root / csv_name)
        mels = [log_mel(load_clip(root / folder / f, cfg), cfg) for f in table.fname]
        x = np.stack([np.concatenate([m.mean(1), m.max(1)]) for m in mels])
        return x, multi_hot([parse_labels(v) for v in table.labels], summary.classes)

    x_train, y_train = features_and_targets("train_curated.csv", "train_curated")
    x_test, y_test = features_and_targets("test_truth.csv", "test")
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ y_train)
    scores = np.c_[(x_test - mean) / std, np.ones(len(x_test))] @ w
    chance = lwlrap(y_test, np.random.default_rng(0).random(y_test.shape))
    assert lwlrap(y_test, scores) > max(0.75, chance + 0.35)
