"""Preprocessing against what users' data does (issue 15): entries that are not clips, splits
where nothing converts, CSVs that grow, shrink or relabel, paths that do not exist."""

import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fatlib.core.config import MelConfig
from fatlib.io import files, storage
from fatlib.io.dataset import ManifestError, class_vocabulary, clips_digest, read_split
from fatlib.io.feature_store import FeatureStore, FeatureStoreError, read_manifest
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.tools.synth import SynthConfig, generate_dataset
from tests.conftest import downgrade_store

pytestmark = [pytest.mark.slow, pytest.mark.bad_input]
JOB = Path(__file__).resolve().parents[3] / "jobs" / "preprocess.py"
SR = 8000


def _dataset(root, n_curated=4):
    """A tiny dataset; returns its train_curated.csv as a table."""
    generate_dataset(root, SynthConfig(n_curated=n_curated, n_noisy=0, n_test=0,
                                       max_seconds=0.5, sample_rate=SR))
    return pd.read_csv(root / "train_curated.csv")


def _curated(root, out, **options):
    return preprocess(PreprocessConfig(data=str(root), out=str(out), splits=("train_curated",),
                                       **options))


def _job(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of jobs/preprocess.py run in this process."""
    monkeypatch.setattr(sys, "argv", [str(JOB), *args])
    code = runpy.run_path(str(JOB))["main"]()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stored(out):
    table = FeatureStore.open(str(out)).table("train_curated", columns=["fname", "labels"])
    return dict(zip(table.column("fname").to_pylist(), table.column("labels").to_pylist(),
                    strict=True))


@pytest.mark.timeout(120)  # a FIFO opened for reading would block forever
def test_a_directory_a_fifo_a_symlink_loop_and_a_five_sample_clip_become_error_rows(
        ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root)
    folder = root / "train_curated"
    (folder / "x.wav").mkdir()
    os.mkfifo(folder / "pipe.wav")
    (folder / "loop.wav").symlink_to("loop.wav")
    sf.write(folder / "tiny.wav", np.full(5, 0.5), SR, subtype="PCM_16")
    names = ["x.wav", "pipe.wav", "loop.wav", "tiny.wav"]
    extra = pd.DataFrame({"fname": names, "labels": [table.labels[0]] * len(names)})
    pd.concat([table, extra]).to_csv(root / "train_curated.csv", index=False)
    (result,) = _curated(out=out, root=root).splits
    assert (result.converted, result.failed) == (4, 4)
    errors = pd.read_parquet(out / "train_curated" / "_errors.parquet")
    reasons = dict(zip(errors.fname, errors.reason, strict=True))
    assert reasons["x.wav"] == "cannot read: is a directory"
    assert reasons["pipe.wav"] == "cannot read: is a FIFO (named pipe)"
    assert reasons["loop.wav"].startswith("cannot read:") and "symbolic links" in reasons[
        "loop.wav"]
    assert reasons["tiny.wav"].startswith("too short: 5 samples")
    assert set(_stored(out)) == set(table.fname)


def test_a_split_where_nothing_converted_fails_uncommitted_then_reruns(
        ray_local, tmp_path, monkeypatch, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root)
    good_csv = (root / "train_curated.csv").read_text()
    table.assign(fname=[f"missing-{i}.wav" for i in range(len(table))]).to_csv(
        root / "train_curated.csv", index=False)
    args = ["--data", str(root), "--out", str(out), "--splits", "train_curated"]
    code, _, err = _job(monkeypatch, capsys, *args)
    assert code == 2
    assert err.strip().splitlines() == [
        "preprocess: train_curated: none of its 4 clips converted "
        "(first: missing-0.wav: file not found); nothing committed"]
    assert "train_curated" not in (read_manifest(str(out)) or {"splits": {}})["splits"]
    (root / "train_curated.csv").write_text(good_csv)
    code, printed, _ = _job(monkeypatch, capsys, *args)
    assert code == 0
    assert printed.startswith("train_curated: 4 converted, 0 failed;")
    assert set(_stored(out)) == set(table.fname)


def test_added_and_removed_clips_update_the_split_in_place(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root, n_curated=9)
    first, grown = table[:8], pd.concat([table[1:8], table[8:]])
    first.to_csv(root / "train_curated.csv", index=False)
    _curated(root, out, batch_size=2)  # 8 clips: 4 parts of 2 clips
    before = {p.name: p.stat().st_mtime_ns for p in (out / "train_curated").glob("part-*")}
    old_rows = FeatureStore.open(str(out)).table("train_curated").to_pandas().set_index("fname")

    grown.to_csv(root / "train_curated.csv", index=False)
    (result,) = _curated(root, out, batch_size=2).splits
    assert result.summary().startswith("train_curated: 1 converted, 0 failed, 1 removed, 7 kept;")
    assert set(_stored(out)) == set(grown.fname)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "train_curated").glob("part-*")}
    untouched = {name for name in before if after.get(name) == before[name]}
    assert len(untouched) == 3 and len(after) == 5  # the removed clip's part was rewritten
    new_rows = FeatureStore.open(str(out)).table("train_curated").to_pandas().set_index("fname")
    for fname in grown.fname.iloc[:-1]:  # kept rows are the very bytes stored before
        assert new_rows.loc[fname, "logmel"] == old_rows.loc[fname, "logmel"]
    entry = read_manifest(str(out))["splits"]["train_curated"]
    classes = class_vocabulary(str(root))
    assert entry["clips_digest"] == clips_digest(read_split(str(root), "train_curated", classes))
    assert (entry["rows"], entry["frames"]) == (8, int(new_rows.n_frames.sum()))
    assert sorted(entry["files"]) == sorted(after)
    assert _curated(root, out).splits[0].skipped


def test_a_relabelled_clip_is_refused_unless_overwrite(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root)
    _curated(root, out)
    manifest = (out / "_MANIFEST.json").read_text()
    classes = class_vocabulary(str(root))
    new_label = next(c for c in classes if c not in table.labels[1].split(","))
    table.loc[1, "labels"] = new_label
    table.to_csv(root / "train_curated.csv", index=False)
    with pytest.raises(FeatureStoreError) as info:
        _curated(root, out)
    message = str(info.value)
    assert "\n" not in message
    assert f"1 clip(s) of train_curated relabelled since it was preprocessed (first: " \
           f"{table.fname[1]} " in message and f"-> {new_label})" in message
    assert (out / "_MANIFEST.json").read_text() == manifest
    (result,) = _curated(root, out, overwrite=True).splits
    assert result.converted == 4
    assert _stored(out)[table.fname[1]] == [new_label]


def test_a_store_without_digests_is_compared_by_its_rows(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root, n_curated=5)
    table[:4].to_csv(root / "train_curated.csv", index=False)
    _curated(root, out)
    manifest = read_manifest(str(out))
    digest = manifest["splits"]["train_curated"].pop("clips_digest")
    (out / "_MANIFEST.json").write_text(json.dumps(manifest))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    assert _curated(root, out).splits[0].skipped  # same rows: nothing redone, digest recorded
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert read_manifest(str(out))["splits"]["train_curated"]["clips_digest"] == digest
    table.to_csv(root / "train_curated.csv", index=False)
    (result,) = _curated(root, out).splits
    assert (result.converted, result.removed, result.kept) == (1, 0, 4)


def test_a_data_path_that_does_not_exist_is_named(monkeypatch, capsys, tmp_path):
    code, _, err = _job(monkeypatch, capsys, "--data", "/nonexistent", "--out",
                        str(tmp_path / "out"))
    assert code == 2
    assert err.strip().splitlines() == ["preprocess: /nonexistent: dataset path does not exist"]
    with pytest.raises(ManifestError, match="dataset path is a file"):
        preprocess(PreprocessConfig(data=str(JOB), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_an_update_on_s3_and_a_vanished_object(ray_local, s3_bucket, tmp_path):
    import boto3

    local = tmp_path / "data"
    table = _dataset(local)
    table[:3].to_csv(local / "train_curated.csv", index=False)
    s3, bucket = boto3.client("s3"), s3_bucket.removeprefix("s3://")
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"data/{path.relative_to(local)}")
    data, out = f"{s3_bucket}/data", f"{s3_bucket}/features"
    _curated(data, out)
    s3.delete_object(Bucket=bucket, Key=f"data/train_curated/{table.fname[3]}")
    table[1:].to_csv(local / "train_curated.csv", index=False)  # one removed, one (gone) added
    s3.upload_file(str(local / "train_curated.csv"), bucket, "data/train_curated.csv")
    (result,) = _curated(data, out).splits
    assert (result.converted, result.failed, result.removed, result.kept) == (0, 1, 1, 2)
    errors = storage.read_parquet(f"{out}/train_curated/_errors.parquet").to_pylist()
    assert errors == [{"fname": table.fname[3], "reason": "file not found", "version": ""}]
    assert set(_stored(out)) == set(table.fname[1:3])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="features/")["Contents"]]
    assert not any("_staging" in k for k in keys)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_an_out_that_is_in_or_around_the_data_is_refused_before_anything_is_written(
        monkeypatch, capsys, tmp_path, where):
    root = tmp_path / "data"
    _dataset(root)
    before = _files(tmp_path)
    out, data = {"same": (root, root), "inside": (root / "features", root),
                 "around": (tmp_path, root)}[where]
    code, printed, err = _job(monkeypatch, capsys, "--data", str(data), "--out", str(out))
    relation = {"same": "is the dataset", "inside": "lies inside the dataset",
                "around": "contains the dataset"}[where]
    assert (code, printed) == (2, "")
    assert err.strip().splitlines() == [f"preprocess: {out}: the feature store {relation} "
                                        f"{root}; choose an out location outside the dataset"]
    assert _files(tmp_path) == before  # every .wav still there, no lock, no manifest
    linked = tmp_path / "link"  # the same folder under another name is the same folder
    linked.symlink_to(root)
    with pytest.raises(FeatureStoreError, match="is the dataset"):
        preprocess(PreprocessConfig(data=str(root), out=str(linked)))


def test_the_store_never_deletes_a_file_it_did_not_write(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root, n_curated=5)
    table[:4].to_csv(root / "train_curated.csv", index=False)
    mine = [out / "notes.txt", out / "train_curated" / "keep.parquet",
            out / "train_curated" / "part-mine.parquet"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")

    def unharmed():
        return all(p.read_text() == "the user's" for p in mine)

    _curated(root, out)
    assert unharmed() and set(_stored(out)) == set(table.fname[:4])
    table.to_csv(root / "train_curated.csv", index=False)  # an update in place
    assert _curated(root, out, batch_size=2).splits[0].converted == 1 and unharmed()
    assert _curated(root, out, overwrite=True).splits[0].converted == 5 and unharmed()
    other = MelConfig(n_mels=64)  # another configuration: the old store is discarded
    assert _curated(root, out, overwrite=True, mel=other).splits[0].converted == 5
    assert unharmed() and read_manifest(str(out))["fingerprint"] == other.fingerprint
    entry = read_manifest(str(out))["splits"]["train_curated"]
    store_files = {p.name for p in (out / "train_curated").iterdir()}
    assert store_files == {*entry["files"], "_errors.parquet", "keep.parquet",
                           "part-mine.parquet"}  # no part of the earlier versions is left
    assert "uncommitted" not in read_manifest(str(out))


def _replace_audio(path, seed):
    """New audio under the same name (another signal, same length)."""
    n = sf.info(path).frames
    sf.write(path, np.random.default_rng(seed).standard_normal(n) * 0.3, SR, subtype="PCM_16")


def test_replaced_and_fixed_files_are_converted_again_and_nothing_else(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    table = _dataset(root, n_curated=5)
    folder = root / "train_curated"
    (folder / "bad.wav").write_bytes(b"RIFF not really a wav file")
    listed = pd.concat([table[:4], pd.DataFrame({"fname": ["bad.wav"],
                                                 "labels": [table.labels[0]]})])
    listed.to_csv(root / "train_curated.csv", index=False)
    (first,) = _curated(root, out).splits
    assert (first.converted, first.failed) == (4, 1)
    assert _curated(root, out).splits[0].skipped  # nothing changed: no audio read
    pd.concat([listed, table[4:]]).to_csv(root / "train_curated.csv", index=False)
    (grown,) = _curated(root, out).splits  # bad.wav unchanged: its failure is kept, not retried
    assert (grown.converted, grown.failed, grown.failed_before, grown.kept) == (1, 0, 1, 4)
    assert "1 failed before and unchanged since" in grown.summary()
    errors = pd.read_parquet(out / "train_curated" / "_errors.parquet")
    assert errors.fname.tolist() == ["bad.wav"] and errors.version.iloc[0] != ""
    old = FeatureStore.open(str(out)).table("train_curated").to_pandas().set_index("fname")
    replaced = table.fname[0]
    _replace_audio(folder / replaced, seed=1)
    (folder / "bad.wav").write_bytes((folder / table.fname[1]).read_bytes())  # fixed
    (update,) = _curated(root, out).splits
    assert (update.converted, update.failed, update.removed, update.kept) == (2, 0, 0, 4)
    new = FeatureStore.open(str(out)).table("train_curated").to_pandas().set_index("fname")
    assert new.loc[replaced, "logmel"] != old.loc[replaced, "logmel"]
    for fname in table.fname[1:]:  # the others are the very bytes stored before
        assert new.loc[fname, "logmel"] == old.loc[fname, "logmel"]
    assert "bad.wav" in new.index
    assert pd.read_parquet(out / "train_curated" / "_errors.parquet").empty
    assert new.loc[replaced, "version"] == f"{(folder / replaced).stat().st_size}:" \
                                           f"{(folder / replaced).stat().st_mtime_ns}"
    assert _curated(root, out).splits[0].skipped


def test_a_store_without_file_versions_is_rebuilt_not_trusted(ray_local, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    _dataset(root)
    _curated(root, out)
    manifest = read_manifest(str(out))
    del manifest["splits"]["train_curated"]["versions_digest"]  # as stores before versions
    (out / "_MANIFEST.json").write_text(json.dumps(manifest))
    (result,) = _curated(root, out).splits
    assert (result.converted, result.kept) == (4, None)
    assert read_manifest(str(out))["splits"]["train_curated"]["versions_digest"]


def test_a_store_from_before_clip_stats_is_refused_then_rebuilt_with_overwrite(ray_local,
                                                                               tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    _dataset(root)
    _curated(root, out)
    old = downgrade_store(out, tmp_path / "old")
    manifest = (old / "_MANIFEST.json").read_text()
    with pytest.raises(FeatureStoreError) as info:
        _curated(root, old)
    assert str(info.value) == (
        f"{old}: feature store of format 1, from before per-clip dB statistics, which this "
        f"fatlib no longer reads; rebuild it with python jobs/preprocess.py --data {root} "
        f"--out {old} --overwrite")
    assert (old / "_MANIFEST.json").read_text() == manifest  # refused before any write
    (result,) = _curated(root, old, overwrite=True).splits
    assert result.converted == 4 and read_manifest(str(old))["format"] == 2
    assert len(FeatureStore.open(str(old)).table("train_curated")) == 4


def test_a_csv_without_rows_is_refused_naming_it_and_the_other_splits_commit(
        ray_local, tmp_path, monkeypatch, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    generate_dataset(root, SynthConfig(n_curated=3, n_noisy=2, n_test=0, max_seconds=0.5,
                                       sample_rate=SR))
    (root / "train_noisy.csv").write_text("fname,labels\n")  # its audio files are still there
    code, _, err = _job(monkeypatch, capsys, "--data", str(root), "--out", str(out))
    assert code == 2
    assert err.strip().splitlines() == [f"preprocess: train_noisy: {root / 'train_noisy.csv'} "
                                        "lists no clips; nothing committed (train_curated done)"]
    assert set(read_manifest(str(out))["splits"]) == {"train_curated"}
    (root / "train_curated.csv").write_text("fname,labels\n")
    with pytest.raises(FeatureStoreError, match="train_curated.csv lists no clips"):
        _curated(root, out)  # named explicitly: refused, and the committed split stays
    assert len(_stored(out)) == 3



def test_s3_locations_nest_by_bucket_and_key_at_a_slash():
    assert files.contains("s3://b/data/", "s3://b/data/features")
    assert not files.contains("s3://b/data", "s3://b/data2/features")
    assert not files.contains("s3://b/data", "s3://other/data/features")
    assert not files.contains("s3://b/take", "s3://b/take#2")  # a key, not a URL fragment
    assert files.contains("s3://b", "s3://b/any/key")
    with pytest.raises(FeatureStoreError, match="^s3://b/data/f: the feature store lies inside "
                                                "the dataset s3://b/data; "):
        preprocess(PreprocessConfig(data="s3://b/data", out="s3://b/data/f"))  # no S3 reached


@pytest.mark.bad_input
def test_a_conversion_that_fails_midway_leaves_no_staged_parts(ray_local, tmp_path,
                                                                monkeypatch):
    """A full disk while writing parts: the error names the part, and the store keeps no
    half-converted split in its staging folder (a later run would never clean it)."""
    import fatlib.stages.preprocess.convert as convert

    _dataset(tmp_path / "data")

    def fill_the_disk(cfg, split, clips, versions, staged, workers):
        storage.write_bytes(storage.join(staged, "part-0.parquet"), b"half")
        raise storage.StorageError(f"{staged}/part-1.parquet: cannot write (No space left on "
                                   "device)")

    monkeypatch.setattr(convert, "_convert_clips", fill_the_disk)
    with pytest.raises(storage.StorageError, match="No space left on device"):
        _curated(tmp_path / "data", tmp_path / "out")
    staging = tmp_path / "out" / convert.STAGING
    assert not staging.exists() or list(staging.iterdir()) == []
    assert read_manifest(str(tmp_path / "out")) is None or \
        "train_curated" not in read_manifest(str(tmp_path / "out"))["splits"]


def test_a_config_built_in_code_is_checked_like_the_flags(tmp_path):
    from fatlib.core.config import ConfigError

    with pytest.raises(ConfigError, match="--batch-size must be >= 1, got 0"):
        preprocess(PreprocessConfig(data=str(tmp_path / "d"), out=str(tmp_path / "f"),
                                    batch_size=0))
    assert not (tmp_path / "f").exists()
