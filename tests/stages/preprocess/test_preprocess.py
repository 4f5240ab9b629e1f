"""Preprocessing stage end to end: counts, errors table, row contents, idempotence, refusals, S3."""

import io
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from fatlib.core.audio import load_clip
from fatlib.core.config import MelConfig
from fatlib.core.features import decode_logmel, log_mel
from fatlib.io import storage
from fatlib.io.dataset import ManifestError
from fatlib.io.feature_store import FeatureStore, FeatureStoreError, read_manifest
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.tools.synth import SynthConfig, generate_dataset

pytestmark = pytest.mark.slow
TINY = SynthConfig(n_curated=14, n_noisy=6, n_test=5, max_seconds=2.0, sample_rate=22050)


def _plant_bad_files(root):
    """Seven bad curated clips, each a different failure; returns fname -> expected reason."""
    folder = root / "train_curated"
    wav = io.BytesIO()
    sf.write(wav, np.random.default_rng(0).standard_normal(22050) * 0.1, 22050, format="WAV",
             subtype="PCM_16")
    planted = {
        "garbage.wav": (b"\x00\x01not audio at all" * 50, "cannot decode"),
        "empty.wav": (b"", "cannot decode"),
        "text.wav": (b"fname,labels\nthis is a csv file\n", "cannot decode"),
        "truncated.wav": (wav.getvalue()[:20000], "truncated"),
        "silent.wav": (None, "silent"),
        "nan.wav": (None, "NaN"),
        "missing.wav": (None, "file not found"),
    }
    sf.write(folder / "silent.wav", np.zeros(8000), 22050, subtype="PCM_16")
    sf.write(folder / "nan.wav", np.array([0.1, np.nan] * 4000, dtype=np.float32), 22050,
             subtype="FLOAT")
    for name, (data, _) in planted.items():
        if data is not None:
            (folder / name).write_bytes(data)
    table = pd.read_csv(root / "train_curated.csv")
    extra = pd.DataFrame({"fname": list(planted), "labels": ["Hum"] * len(planted)})
    pd.concat([table, extra]).to_csv(root / "train_curated.csv", index=False)
    return {name: reason for name, (_, reason) in planted.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, TINY)
    return root, _plant_bad_files(root)


@pytest.fixture(scope="module")
def store(dataset, ray_local, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("features") / "store"
    result = preprocess(PreprocessConfig(data=str(root), out=str(out), batch_size=4))
    return out, result


def test_counts_and_reasons_are_exact(dataset, store):
    _, planted = dataset
    out, result = store
    by_split = {r.split: r for r in result.splits}
    assert (by_split["train_curated"].converted, by_split["train_curated"].failed) == (14, 7)
    assert (by_split["train_noisy"].converted, by_split["train_noisy"].failed) == (6, 0)
    assert (by_split["test"].converted, by_split["test"].failed) == (5, 0)
    errors = pd.read_parquet(out / "train_curated" / "_errors.parquet")
    reasons = dict(zip(errors.fname, errors.reason, strict=True))
    assert set(reasons) == set(planted)
    for fname, expected in planted.items():
        assert expected in reasons[fname], (fname, reasons[fname])
    line = by_split["train_curated"].summary()
    assert line.startswith("train_curated: 14 converted, 7 failed (see ")
    assert str(out / "train_curated" / "_errors.parquet") in line


def test_manifest_records_counts_fingerprint_and_classes(store):
    out, _ = store
    manifest = read_manifest(str(out))
    assert manifest["fingerprint"] == MelConfig().fingerprint
    assert manifest["classes"] == sorted(manifest["classes"]) and len(manifest["classes"]) == 10
    curated = manifest["splits"]["train_curated"]
    assert (curated["rows"], curated["errors"]) == (14, 7)
    table = FeatureStore.open(str(out)).table("train_curated")
    assert curated["frames"] == sum(table.column("n_frames").to_pylist())
    files = FeatureStore.open(str(out)).files("train_curated")
    assert curated["bytes"] == sum(storage.file_size(uri) for uri in files)
    assert curated["audio_seconds"] == pytest.approx(sum(table.column("seconds").to_pylist()), 1e-3)
    assert not (out / "_staging").exists()


def test_rows_decode_to_the_core_log_mel(dataset, store):
    root, _ = dataset
    out, _ = store
    cfg = MelConfig()
    store = FeatureStore.open(str(out), cfg)
    table, files = store.table("train_noisy"), store.files("train_noisy")
    meta = pq.read_schema(files[0]).metadata
    assert meta[b"fatlib.fingerprint"].decode() == cfg.fingerprint
    truth = pd.read_csv(root / "train_noisy.csv")
    assert sorted(table.column("fname").to_pylist()) == sorted(truth.fname)
    for row in table.to_pylist():
        stored = decode_logmel(row["logmel"], cfg.n_mels, row["n_frames"])
        expected = log_mel(load_clip(root / "train_noisy" / row["fname"], cfg), cfg)
        np.testing.assert_array_equal(stored, expected.astype(np.float16))
        labels = truth.set_index("fname").loc[row["fname"], "labels"].split(",")
        assert row["labels"] == labels
    test_rows = store.table("test").to_pylist()
    assert all(r["labels"] == [] for r in test_rows)


def test_rerun_skips_finished_splits(dataset, store):
    root, _ = dataset
    out, _ = store
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = preprocess(PreprocessConfig(data=str(root), out=str(out)))
    assert all(r.skipped for r in again.splits)
    assert "already preprocessed" in again.summary()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_other_fingerprint_is_refused_naming_both(dataset, store):
    root, _ = dataset
    out, _ = store
    other = MelConfig(n_mels=64)
    with pytest.raises(FeatureStoreError) as info:
        preprocess(PreprocessConfig(data=str(root), out=str(out), mel=other))
    assert MelConfig().fingerprint in str(info.value) and other.fingerprint in str(info.value)
    with pytest.raises(FeatureStoreError, match=other.fingerprint):
        FeatureStore.open(str(out), other)


def test_uncommitted_split_is_invisible_and_redone(dataset, ray_local, tmp_path):
    root, _ = dataset
    out = tmp_path / "store"
    preprocess(PreprocessConfig(data=str(root), out=str(out), splits=("test",)))
    # What a job killed mid-commit leaves: files in place, no manifest entry.
    shutil.copytree(out / "test", out / "train_noisy")
    with pytest.raises(FeatureStoreError, match="not preprocessed"):
        FeatureStore.open(str(out)).files("train_noisy")
    preprocess(PreprocessConfig(data=str(root), out=str(out), splits=("train_noisy",)))
    assert len(FeatureStore.open(str(out)).table("train_noisy")) == TINY.n_noisy
    assert set(read_manifest(str(out))["splits"]) == {"test", "train_noisy"}


def _write_csv(root, name, text):
    (root / name).write_text(text)


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("fname,tags\na.wav,Hum\n", "train_curated.csv: missing column 'labels'"),
        ("fname,labels\na.wav,Hum\nb.wav,Hum\na.wav,Hiss\n",
         "train_curated.csv line 4: duplicate fname 'a.wav' (first on line 2)"),
        ("fname,labels\n../x.wav,Hum\n", "train_curated.csv line 2: unsafe fname '../x.wav'"),
        ("fname,labels\n/etc/passwd,Hum\n", "unsafe fname '/etc/passwd'"),
        ("fname,labels\nsub/x.wav,Hum\n", "unsafe fname 'sub/x.wav'"),
        ("fname,labels\nx.wav,\"Hum,Purr\"\n",
         "train_curated.csv line 2: label 'Purr' of x.wav is not in the class vocabulary"),
    ],
    ids=["missing-column", "duplicate", "parent-dir", "absolute", "separator", "unknown-label"],
)
def test_bad_manifest_is_one_clear_error_and_nothing_written(tmp_path, csv_text, message):
    root = tmp_path / "data"
    generate_dataset(root, SynthConfig(n_curated=2, n_noisy=2, n_test=2, max_seconds=0.5,
                                       sample_rate=8000))
    _write_csv(root, "train_curated.csv", csv_text)
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as info:
        preprocess(PreprocessConfig(data=str(root), out=str(out)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_test_split_without_csv_takes_every_audio_file(ray_local, tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, SynthConfig(n_curated=3, n_noisy=0, n_test=3, max_seconds=0.5,
                                       sample_rate=8000))
    (root / "sample_submission.csv").unlink()
    (root / "test" / "notes.txt").write_text("not a clip")
    out = tmp_path / "out"
    preprocess(PreprocessConfig(data=str(root), out=str(out), splits=("test",)))
    names = FeatureStore.open(str(out)).table("test").column("fname").to_pylist()
    assert sorted(names) == sorted(p.name for p in (root / "test").glob("*.wav"))


def test_input_and_output_on_s3(ray_local, s3_bucket, tmp_path):
    import boto3

    local = tmp_path / "data"
    generate_dataset(local, SynthConfig(n_curated=5, n_noisy=0, n_test=2, max_seconds=1.0,
                                        sample_rate=16000))
    (local / "train_curated" / "bad.wav").write_bytes(b"nope")
    table = pd.read_csv(local / "train_curated.csv")
    pd.concat([table, pd.DataFrame({"fname": ["bad.wav"], "labels": ["Hum"]})]).to_csv(
        local / "train_curated.csv", index=False)
    s3 = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"data/{path.relative_to(local)}")
    result = preprocess(PreprocessConfig(data=f"{s3_bucket}/data", out=f"{s3_bucket}/features"))
    by_split = {r.split: r for r in result.splits}
    assert (by_split["train_curated"].converted, by_split["train_curated"].failed) == (5, 1)
    assert len(FeatureStore.open(f"{s3_bucket}/features").table("test")) == 2
    manifest = read_manifest(f"{s3_bucket}/features")
    assert manifest["splits"]["train_curated"]["errors"] == 1
    text = storage.read_bytes(f"{s3_bucket}/features/_MANIFEST.json").decode()
    assert "fatlib-test-secret" not in text and "fatlib-test-key" not in text
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="features/")["Contents"]]
    assert not any("_staging" in k for k in keys)


@pytest.mark.bad_input
def test_a_second_preprocessing_into_a_store_in_use_is_refused_at_once(dataset, tmp_path):
    import os

    from fatlib.io.locks import LOCK_FILE, DirectoryInUse, hold

    root, _ = dataset
    out = tmp_path / "store"
    with hold(str(out), "preprocess"):  # a first preprocessing, still converting
        with pytest.raises(DirectoryInUse, match=f"^{out} is in use by preprocess \\(pid "
                                                 f"{os.getpid()} on host "):
            preprocess(PreprocessConfig(data=str(root), out=str(out)))
        assert os.listdir(out) == [LOCK_FILE]  # nothing of the second
    assert not out.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_out_that_is_or_is_under_a_file_is_refused_up_front(tmp_path, where):
    from fatlib.io.locks import DirectoryUnusable

    file = tmp_path / "features.parquet"
    file.write_bytes(b"mine")
    out = file if where == "file" else file / "store"
    # No dataset at all: the --out is checked before the data is read.
    with pytest.raises(DirectoryUnusable) as e:
        preprocess(PreprocessConfig(data=str(tmp_path / "no-data"), out=str(out)))
    assert str(e.value) == (f"{out} cannot be written: {file} is a file, not a directory; "
                            "choose another --out")
    assert file.read_bytes() == b"mine"
