"""Storage: one API for local paths and s3:// (a moto server on loopback), atomic writes,
Parquet round trips, and credentials kept out of URIs and messages."""

import pyarrow as pa
import pytest

from fatlib.io import storage


def test_local_writes_are_atomic_and_reads_name_what_is_missing(tmp_path):
    uri = str(tmp_path / "a" / "b.json")
    storage.write_json(uri, {"x": 1})
    storage.write_json(uri, {"x": 2})
    assert storage.read_json(uri) == {"x": 2}
    assert storage.list_files(str(tmp_path / "a")) == ["b.json"]  # no temporary files left
    with pytest.raises(storage.StorageError, match="nope.txt: not found"):
        storage.read_bytes(str(tmp_path / "nope.txt"))


def test_parquet_round_trip_reports_its_size(tmp_path):
    table = pa.table({"fname": ["a.wav", "b.wav"], "n": [1, 2]})
    uri = str(tmp_path / "t.parquet")
    size = storage.write_parquet(uri, table, compression="zstd")
    assert size == storage.file_size(uri) > 0
    assert storage.read_parquet(uri).equals(table)
    assert storage.read_parquet(uri, columns=["n"]).column_names == ["n"]


def test_directories_list_move_and_remove(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst" / "final")
    storage.write_bytes(storage.join(src, "one"), b"1")
    storage.write_bytes(storage.join(src, "sub", "two"), b"2")
    assert storage.list_dirs(src) == ["sub"] and storage.list_files(src) == ["one"]
    storage.move_tree(src, dst)
    assert not storage.exists(src) and storage.read_bytes(storage.join(dst, "one")) == b"1"
    storage.remove_tree(dst)
    assert not storage.exists(dst)
    storage.remove(storage.join(dst, "gone"))  # removing nothing is fine


@pytest.mark.bad_input
def test_uris_resolve_and_bad_ones_are_refused():
    assert storage.absolute("file:///x/y") == "/x/y"
    assert storage.join("s3://bucket/a", "b") == "s3://bucket/a/b"
    assert storage.is_remote("s3://bucket/a") and not storage.is_remote("/tmp/a")
    with pytest.raises(storage.StorageError, match="unsupported storage scheme ftp://"):
        storage.is_remote("ftp://host/x")
    with pytest.raises(storage.StorageError) as refused:
        storage.resolve("s3://AKIAKEY:topsecret@bucket/x")
    assert "topsecret" not in str(refused.value) and "credential" in str(refused.value)


def test_the_same_calls_work_on_s3(s3_bucket):
    root = f"{s3_bucket}/store"
    storage.write_json(storage.join(root, "m.json"), {"ok": True})
    storage.write_parquet(storage.join(root, "p", "t.parquet"), pa.table({"a": [1, 2, 3]}))
    assert storage.read_json(f"{root}/m.json") == {"ok": True}
    assert storage.read_parquet(f"{root}/p/t.parquet").column("a").to_pylist() == [1, 2, 3]
    assert storage.list_files(root) == ["m.json"] and storage.list_dirs(root) == ["p"]
    storage.move_tree(f"{root}/p", f"{root}/q")
    assert storage.is_file(f"{root}/q/t.parquet") and not storage.exists(f"{root}/p/t.parquet")
