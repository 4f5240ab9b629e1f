"""Held-out mixes: a test split of a run's validation clips alone and in overlapping pairs."""

import csv

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fatlib.core.labels import parse_labels
from fatlib.tools.heldout_mixes import LEVEL_RMS, MixesError, at_level, build_heldout_mixes, overlap
from fatlib.tools.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def dataset_and_run(tmp_path_factory):
    """A small dataset and a fake run whose validation fold is 8 of its curated clips."""
    root = tmp_path_factory.mktemp("mixes")
    generate_dataset(root / "data", SynthConfig(n_curated=16, n_noisy=0, n_test=1,
                                                max_seconds=1.5, sample_rate=16000))
    curated = pd.read_csv(root / "data" / "train_curated.csv")
    classes = list(pd.read_csv(root / "data" / "sample_submission.csv").columns[1:])
    held = curated.fname[:8].tolist()
    (root / "run").mkdir()
    oof = pd.DataFrame(np.full((8, len(classes)), 0.5, np.float32), columns=classes)
    oof.insert(0, "fname", held)
    oof.to_parquet(root / "run" / "oof.parquet")
    return root, dict(zip(curated.fname, curated.labels, strict=True)), held


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_held_out_clip_alone_then_pairs_that_add_as_sounds_do(dataset_and_run, tmp_path):
    root, labels, held = dataset_and_run
    out = tmp_path / "mixes"
    result = build_heldout_mixes(str(root / "data"), str(root / "run"), str(out), pairs=12)
    assert (result.singles, result.pairs) == (8, 12)
    truth = {r["fname"]: set(parse_labels(r["labels"])) for r in _rows(out / "test_truth.csv")}
    recipe = _rows(out / "mixes.csv")
    assert len(truth) == len(recipe) == 20 == len(list((out / "test").iterdir()))
    submission = pd.read_csv(out / "sample_submission.csv")
    assert list(submission.columns[1:]) == list(
        pd.read_csv(root / "data" / "sample_submission.csv").columns[1:])

    def source(fname, gain):
        y, _ = sf.read(root / "data" / "train_curated" / fname, dtype="float32")
        return at_level(y, float(gain))

    for row in recipe:
        y, sr = sf.read(out / "test" / row["fname"], dtype="float32")
        assert sr == 16000 and row["source"] in held
        if not row["inside"]:  # a clip alone, at its level
            assert truth[row["fname"]] == set(parse_labels(labels[row["source"]]))
            assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(
                float(row["gain"]) * LEVEL_RMS, rel=1e-3)
            continue
        assert row["inside"] in held and row["inside"] != row["source"]
        a, b = set(parse_labels(labels[row["source"]])), set(parse_labels(labels[row["inside"]]))
        assert not a & b and truth[row["fname"]] == a | b  # two sounds, both labelled
        longer, inside = source(row["source"], row["gain"]), source(row["inside"],
                                                                  row["inside_gain"])
        assert len(inside) <= len(longer) and len(y) == len(longer)
        offset = int(row["offset_samples"])
        np.testing.assert_allclose(y, overlap(longer, inside, offset), atol=1e-6)
        assert 0.5 <= float(row["gain"]) / float(row["inside_gain"]) <= 2.0  # within 6 dB


def test_the_same_seed_makes_the_same_split(dataset_and_run, tmp_path):
    root, _, _ = dataset_and_run
    made = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_heldout_mixes(str(root / "data"), str(root / "run"), str(tmp_path / name),
                            pairs=4, seed=seed)
        made[name] = (tmp_path / name / "mixes.csv").read_text()
    assert made["a"] == made["b"] != made["c"]


def test_overlap_adds_the_shorter_part_inside_the_longer():
    longer, shorter = np.arange(6, dtype=np.float32), np.ones(2, np.float32)
    np.testing.assert_array_equal(overlap(longer, shorter, 3), [0, 1, 2, 4, 5, 5])
    np.testing.assert_array_equal(overlap(longer, np.zeros(6, np.float32), 0), longer)
    with pytest.raises(ValueError, match="does not fit"):
        overlap(longer, shorter, 5)


@pytest.mark.bad_input
def test_a_k_fold_ensemble_or_a_used_folder_is_refused_in_one_line(dataset_and_run, tmp_path):
    root, _, _ = dataset_and_run
    with pytest.raises(MixesError, match="no oof.parquet; give one training run"):
        build_heldout_mixes(str(root / "data"), str(root), str(tmp_path / "x"))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    with pytest.raises(MixesError, match="is not empty"):
        build_heldout_mixes(str(root / "data"), str(root / "run"), str(tmp_path / "used"))
    assert (tmp_path / "used" / "mine.txt").read_text() == "keep"
    with pytest.raises(MixesError, match="to a local folder"):
        build_heldout_mixes(str(root / "data"), str(root / "run"), "s3://bucket/mixes")
    one = tmp_path / "one-clip-run"
    one.mkdir()
    pd.read_parquet(root / "run" / "oof.parquet")[:1].to_parquet(one / "oof.parquet")
    with pytest.raises(MixesError, match="held out 1 clip: pairs need two or more"):
        build_heldout_mixes(str(root / "data"), str(one), str(tmp_path / "y"))
