"""The feature store: row files with their fingerprint, splits visible only once committed,
stores of another MelConfig refused naming both fingerprints, stores of format 1 refused with
the command that rebuilds them."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fatlib.core.config import MelConfig
from fatlib.core.features import CLIP_STATS, clip_stats, decode_logmel, encode_logmel
from fatlib.io import storage
from fatlib.io.feature_rows import write_errors, write_rows
from fatlib.io.feature_store import (
    ERRORS_FILE,
    FeatureStore,
    FeatureStoreError,
    SplitInfo,
    new_manifest,
    read_manifest,
)
from fatlib.io.store_commits import commit_split, discard_store

CFG = MelConfig()


def _stage_split(root, rows=2):
    staged = storage.join(root, "_staging", "train_curated-x")
    logmels = [np.full((CFG.n_mels, 3 + i), -40.0 + i, dtype=np.float32) for i in range(rows)]
    columns = {"fname": [f"{i}.wav" for i in range(rows)], "labels": [["Bark"]] * rows,
               "n_frames": [m.shape[1] for m in logmels], "seconds": [1.0] * rows,
               "logmel": [encode_logmel(m) for m in logmels]}
    columns.update({name: [float(clip_stats(m)[i]) for m in logmels]
                    for i, name in enumerate(CLIP_STATS)})
    size = write_rows(storage.join(staged, "part-a.parquet"), columns, CFG, "train_curated")
    write_errors(storage.join(staged, ERRORS_FILE), [("bad.wav", "cannot decode")])
    return staged, size, logmels


def test_rows_round_trip_with_the_fingerprint_in_every_file(tmp_path):
    root = str(tmp_path)
    staged, size, logmels = _stage_split(root)
    meta = pq.read_schema(storage.join(staged, "part-a.parquet")).metadata
    assert meta[b"fatlib.fingerprint"].decode() == CFG.fingerprint and size > 0
    manifest = new_manifest(CFG, ["Bark"], "data")
    info = SplitInfo("train_curated", ["part-a.parquet"], 2, 1, 2.0, 7, size, 0.1)
    commit_split(root, manifest, staged, info)
    store = FeatureStore.open(root, CFG)
    table = store.table("train_curated")
    assert table.column("fname").to_pylist() == ["0.wav", "1.wav"]
    row = table.to_pylist()[1]
    np.testing.assert_array_equal(decode_logmel(row["logmel"], CFG.n_mels, row["n_frames"]),
                                  logmels[1])
    errors = storage.read_parquet(storage.join(root, "train_curated", ERRORS_FILE))
    assert errors.to_pylist() == [{"fname": "bad.wav", "reason": "cannot decode", "version": ""}]
    fs, paths = store.paths("train_curated")
    assert paths == [str(tmp_path / "train_curated" / "part-a.parquet")]
    assert store.split("train_curated") == info and store.has("train_curated")
    assert store.errors("train_curated") == {"bad.wav": ("cannot decode", "")}
    assert row["db_max"] == pytest.approx(-39.0) and row["db_min"] == pytest.approx(-39.0)
    clips = store.clips("train_curated")  # what preprocessing compares with the CSV
    assert clips.column_names == ["fname", "labels", "n_frames", "seconds", "version", "file"]
    assert clips.column("file").to_pylist() == ["part-a.parquet"] * 2
    assert store.classes == ["Bark"] and store.splits == ["train_curated"]


def test_the_store_reads_its_manifest_once(tmp_path, monkeypatch):
    root = str(tmp_path)
    staged, size, _ = _stage_split(root)
    commit_split(root, new_manifest(CFG, ["Bark"], "data"), staged,
                 SplitInfo("train_curated", ["part-a.parquet"], 2, 1, 2.0, 7, size, 0.1))
    reads = []
    read_json = storage.read_json
    monkeypatch.setattr(storage, "read_json", lambda uri: reads.append(uri) or read_json(uri))
    store = FeatureStore.open(root, CFG)
    store.table("train_curated", ["fname", "labels"])
    store.paths("train_curated")
    store.split("train_curated")
    assert reads == [storage.join(root, "_MANIFEST.json")]


def test_a_split_is_invisible_until_committed(tmp_path):
    root = str(tmp_path)
    manifest = new_manifest(CFG, ["Bark"], "data")
    storage.write_json(storage.join(root, "_MANIFEST.json"), manifest)
    _stage_split(root)
    store = FeatureStore.open(root)
    with pytest.raises(FeatureStoreError, match="split 'train_curated' not preprocessed"):
        store.files("train_curated")
    assert not store.has("train_curated") and store.splits == []


def test_another_mel_config_is_refused_naming_both_fingerprints(tmp_path):
    root = str(tmp_path)
    storage.write_json(storage.join(root, "_MANIFEST.json"), new_manifest(CFG, ["Bark"], "d"))
    other = MelConfig(n_mels=64)
    with pytest.raises(FeatureStoreError, match=f"{CFG.fingerprint}.*expects {other.fingerprint}"):
        FeatureStore.open(root, other)
    with pytest.raises(FeatureStoreError, match="no feature store here"):
        FeatureStore.open(str(tmp_path / "empty"))
    assert FeatureStore.find(str(tmp_path / "empty")) is None


@pytest.mark.bad_input
def test_a_fingerprint_mismatch_names_the_fields_and_says_rebuild(tmp_path):
    root = str(tmp_path)
    storage.write_json(storage.join(root, "_MANIFEST.json"), new_manifest(CFG, ["Bark"], "d"))
    with pytest.raises(FeatureStoreError) as info:
        FeatureStore.open(root, MelConfig(n_mels=64, fmin=0.0))
    message = str(info.value)
    assert "differs in n_mels 128 in the store, 64 expected; fmin 20.0 in the store, 0.0 " \
           "expected" in message
    assert "rebuild the store with jobs/preprocess.py" in message and "\n" not in message


@pytest.mark.bad_input
def test_a_store_from_before_clip_stats_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    root = tmp_path / "features"
    root.mkdir()
    old = {**new_manifest(CFG, ["Bark"], "/data/fat2019"), "format": 1}
    old["splits"]["train_curated"] = {"files": ["part-a.parquet"], "rows": 2, "errors": 0,
                                      "audio_seconds": 2.0, "frames": 7, "bytes": 1,
                                      "wall_seconds": 0.1}
    (root / "_MANIFEST.json").write_text(json.dumps(old))
    expected = (f"{root}: feature store of format 1, from before per-clip dB statistics, which "
                "this fatlib no longer reads; rebuild it with python jobs/preprocess.py --data "
                f"/data/fat2019 --out {root} --overwrite")
    for read in (lambda: FeatureStore.open(str(root)), lambda: FeatureStore.find(str(root), CFG),
                 lambda: FeatureStore(str(root), old)):
        with pytest.raises(FeatureStoreError) as info:
            read()
        assert str(info.value) == expected


def _staged_part(root, name, text="x"):
    staged = storage.join(root, "_staging", f"train_curated-{name}")
    storage.write_bytes(storage.join(staged, name), text.encode())
    write_errors(storage.join(staged, ERRORS_FILE), [])
    return staged


def _info(files):
    return SplitInfo("train_curated", files, 1, 0, 1.0, 1, 1, 0.1)


def test_commits_replace_only_the_files_the_store_wrote(tmp_path):
    root, split = str(tmp_path), tmp_path / "train_curated"
    split.mkdir()
    (split / "notes.txt").write_text("the user's")
    (tmp_path / "notes.txt").write_text("the user's")
    manifest = new_manifest(CFG, ["Bark"], "data")
    commit_split(root, manifest, _staged_part(root, "part-a.parquet"), _info(["part-a.parquet"]))
    commit_split(root, manifest, _staged_part(root, "part-b.parquet"),
                 _info(["part-a.parquet", "part-b.parquet"]), keep=["part-a.parquet"])
    assert sorted(p.name for p in split.iterdir()) == [
        ERRORS_FILE, "notes.txt", "part-a.parquet", "part-b.parquet"]
    # A commit killed after it recorded its files and moved one: the next commit removes it.
    manifest["uncommitted"] = {"train_curated": ["part-c.parquet"]}
    (split / "part-c.parquet").write_text("half a commit")
    commit_split(root, manifest, _staged_part(root, "part-d.parquet"), _info(["part-d.parquet"]))
    assert sorted(p.name for p in split.iterdir()) == [ERRORS_FILE, "notes.txt",
                                                       "part-d.parquet"]
    assert "uncommitted" not in read_manifest(root)
    assert read_manifest(root)["splits"]["train_curated"]["files"] == ["part-d.parquet"]
    discard_store(root, read_manifest(root), new_manifest(MelConfig(n_mels=64), ["Bark"], "d"))
    assert sorted(p.name for p in split.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "the user's"
    assert read_manifest(root)["splits"] == {} and "uncommitted" not in read_manifest(root)


def _store_of_parts(root, parts):
    """A committed train_curated split with one Parquet part per {part name: fnames}."""
    staged = storage.join(root, "_staging", "train_curated-x")
    logmel = encode_logmel(np.full((CFG.n_mels, 3), -40.0, dtype=np.float32))
    for name, fnames in parts.items():
        columns = {"fname": fnames, "labels": [["Bark"]] * len(fnames),
                   "n_frames": [3] * len(fnames), "seconds": [1.0] * len(fnames),
                   "logmel": [logmel] * len(fnames), **{s: [0.0] * len(fnames) for s in CLIP_STATS}}
        write_rows(storage.join(staged, name), columns, CFG, "train_curated")
    write_errors(storage.join(staged, ERRORS_FILE), [])
    rows = sum(len(f) for f in parts.values())
    commit_split(root, new_manifest(CFG, ["Bark"], "data"), staged,
                 SplitInfo("train_curated", sorted(parts), rows, 0, rows, 3 * rows, 1, 0.1))
    return FeatureStore.open(root, CFG)


def test_paths_of_named_parts_and_clips_naming_each_rows_part(tmp_path):
    store = _store_of_parts(str(tmp_path), {"part-a.parquet": ["a1.wav", "a2.wav"],
                                            "part-b.parquet": ["b1.wav", "b2.wav"],
                                            "part-c.parquet": ["c1.wav"]})
    split = tmp_path / "train_curated"

    def paths(parts=None):
        fs, found = store.paths("train_curated", parts=parts)
        return [p.removeprefix(f"{split}/") for p in found]

    assert paths() == ["part-a.parquet", "part-b.parquet", "part-c.parquet"]
    assert paths({"part-c.parquet", "part-a.parquet", "part-z.parquet"}) == ["part-a.parquet",
                                                                           "part-c.parquet"]
    assert paths(set()) == []
    clips = store.clips("train_curated").to_pydict()
    assert list(zip(clips["fname"], clips["file"], strict=True)) == [
        ("a1.wav", "part-a.parquet"), ("a2.wav", "part-a.parquet"), ("b1.wav", "part-b.parquet"),
        ("b2.wav", "part-b.parquet"), ("c1.wav", "part-c.parquet")]
    data = (split / "part-c.parquet").read_bytes()  # a damaged part: one line naming it
    (split / "part-c.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(storage.StorageError, match=r"part-c\.parquet: not a readable Parquet"):
        store.clips("train_curated")
