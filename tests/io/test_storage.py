"""Storage: one API for local paths and s3:// (a moto server on loopback), atomic writes,
Parquet round trips, and credentials kept out of URIs and messages."""

import os

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


# Clip names a dataset may hold that a URL parser reads as syntax (fragment, query, escape,
# userinfo) or refuses (space); "take" is the object a URL parser reads for "take#2.wav".
URL_CHARACTER_NAMES = ["take", "take#2.wav", "a?b.wav", "50%.wav", "x y.wav", "u@h.wav",
                       "p+q;r.wav"]


def test_keys_with_url_characters_are_keys_on_s3(s3_bucket):
    import boto3

    client, bucket = boto3.client("s3"), s3_bucket.removeprefix("s3://")
    root = f"{s3_bucket}/clips"
    for name in URL_CHARACTER_NAMES:  # written by another tool, read by fatlib
        client.put_object(Bucket=bucket, Key=f"clips/{name}", Body=f"audio of {name}".encode())
    for name in URL_CHARACTER_NAMES:
        uri = storage.join(root, name)
        assert storage.is_file(uri)
        assert storage.read_bytes(uri) == f"audio of {name}".encode()
    assert storage.list_files(root) == sorted(URL_CHARACTER_NAMES)
    for name in URL_CHARACTER_NAMES:  # written by fatlib, read by another tool
        storage.write_bytes(storage.join(root, "out", name), name.encode())
        body = client.get_object(Bucket=bucket, Key=f"clips/out/{name}")["Body"].read()
        assert body == name.encode()
    assert not storage.is_file(storage.join(root, "take#3.wav"))


def test_a_clip_named_with_a_hash_decodes_its_own_audio_on_s3(s3_bucket, wav_dir):
    from fatlib.core.config import MelConfig
    from fatlib.io.clips import clip_log_mel

    mel = MelConfig()
    storage.write_bytes(f"{s3_bucket}/d/take", (wav_dir / "noise.wav").read_bytes())
    storage.write_bytes(f"{s3_bucket}/d/take#2.wav", (wav_dir / "tone.wav").read_bytes())
    remote, _ = clip_log_mel(f"{s3_bucket}/d/take#2.wav", "take#2.wav", mel)
    local, _ = clip_log_mel(str(wav_dir / "tone.wav"), "tone.wav", mel)
    assert remote.shape == local.shape and (remote == local).all()


# Roots a user may give with credentials in them; the parts that must never be printed.
CREDENTIAL_ROOTS = [
    ("s3://AKIAEXAMPLE:abc/def+ghi@bucket/x", ["AKIAEXAMPLE", "abc", "def+ghi"]),
    ("s3://KEY:SEC/RET@bucket/x", ["KEY", "SEC", "RET"]),
    ("s3://user@bucket/x", ["user"]),
    ("s3://TOKEN/WITH/SLASH@bucket/x", ["TOKEN", "WITH", "SLASH"]),
    ("gs://KEY:SECRET/x", ["KEY", "SECRET"]),
    ("s3://bucket/x?secret_key=SEKRIT", ["SEKRIT"]),
    ("s3:KEY:SECRET@bucket/x", ["KEY", "SECRET"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("uri", "secrets"), CREDENTIAL_ROOTS)
def test_a_root_with_credentials_is_refused_without_showing_them(uri, secrets):
    with pytest.raises(storage.StorageError) as refused:
        storage.absolute(uri)  # what every stage calls on its location flags first
    message = str(refused.value)
    assert "\n" not in message and ("credentials" in message or "without a bucket" in message)
    assert [s for s in secrets if s in message] == []


@pytest.mark.bad_input
def test_a_bucket_that_cannot_be_one_is_refused_wherever_a_uri_is_resolved():
    for uri in ("s3://KEY:SECRET@bucket/x", "s3://KEY:SECRET/x", "s3://localhost:9000/b/x"):
        with pytest.raises(storage.StorageError, match="must not carry credentials") as refused:
            storage.resolve(uri)
        assert "KEY" not in str(refused.value) and "SECRET" not in str(refused.value)
    with pytest.raises(storage.StorageError, match="not a bucket name"):
        storage.resolve("s3://my bucket/x")
    assert storage.absolute("hdfs://namenode:8020/data") == "hdfs://namenode:8020/data"


@pytest.mark.bad_input
def test_a_root_holding_url_syntax_is_refused_but_names_below_it_are_not():
    for uri in ("s3://bucket/run#1", "s3://bucket/50%25/x", "s3://bucket/my run"):
        with pytest.raises(storage.StorageError, match="must not hold '#', '%' or white space"):
            storage.absolute(uri)
    assert storage.absolute("s3://my-bucket.v2/data_1/x-y.z") == "s3://my-bucket.v2/data_1/x-y.z"
    assert storage.absolute("/tmp/a@b#c") == "/tmp/a@b#c"  # local paths are paths


@pytest.mark.bad_input
def test_a_write_that_fails_midway_names_the_path_and_leaves_no_temporary_file(tmp_path):
    import resource
    import signal

    uri = str(tmp_path / "m.parquet")
    storage.write_bytes(uri, b"the old content")
    # A file size limit makes the write fail after its first 4 KiB, as a full disk does;
    # SIGXFSZ ignored so that the write reports EFBIG instead of ending the process.
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(storage.StorageError) as failed:
            storage.write_bytes(uri, b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(failed.value) == f"{uri}: cannot write (File too large)"
    assert storage.read_bytes(uri) == b"the old content"
    assert storage.list_files(str(tmp_path)) == ["m.parquet"]


@pytest.mark.bad_input
def test_a_write_where_a_file_stands_in_the_way_is_one_line(tmp_path):
    (tmp_path / "out").write_text("a file of the user's")
    uri = str(tmp_path / "out" / "run" / "metrics.json")
    with pytest.raises(storage.StorageError) as failed:
        storage.write_json(uri, {"x": 1})
    assert str(failed.value) == (f"{uri}: cannot write (a file stands where a folder of the "
                                 "path should be)")
    assert (tmp_path / "out").read_text() == "a file of the user's"


@pytest.mark.bad_input
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_write_into_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(storage.StorageError, match="ro/x.json: cannot write "
                                                       r"\(Permission denied\)"):
            storage.write_bytes(str(folder / "x.json"), b"1")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.bad_input
def test_a_write_the_object_store_refuses_is_one_line(s3_endpoint):
    uri = "s3://fatlib-no-such-bucket/run/metrics.json"
    with pytest.raises(storage.StorageError) as failed:
        storage.write_json(uri, {"x": 1})
    message = str(failed.value)
    assert message.startswith(f"{uri}: cannot write (") and "\n" not in message
    assert "not found" in message


@pytest.mark.bad_input
def test_a_corrupt_parquet_file_is_one_line_naming_it(tmp_path):
    """A truncated or overwritten part of a store: StorageError naming the file, not pyarrow's
    49-line traceback from the driver."""
    good = str(tmp_path / "part.parquet")
    storage.write_parquet(good, pa.table({"x": [1, 2, 3]}))
    data = (tmp_path / "part.parquet").read_bytes()
    (tmp_path / "part.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(storage.StorageError, match=r"part\.parquet: not a readable Parquet") as e:
        storage.read_parquet(good)
    assert "\n" not in str(e.value)
