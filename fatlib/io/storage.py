"""Every location in fatlib — a local path or an s3:// (or other pyarrow) URI — resolved here.

S3-compatible stores are reached through the standard AWS chain (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles); credentials never appear in
a URI, so they never reach logs, errors, manifests or metadata. Stages never special-case S3.
"""

from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import uuid
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fatlib.core.errors import UserError, redact

REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "hdfs")


class StorageError(UserError):
    """A location is unusable: bad URI, credentials in it, missing object."""


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or a remote URI."""
    if not is_remote(uri):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    parts = urlsplit(uri)
    if "@" in parts.netloc or parts.query:
        # Refused whole, not parsed: a query's options are ignored by the filesystem below,
        # and a secret in either part must not reach a log, an error or a manifest.
        raise StorageError(
            f"{redact(uri)}: {parts.scheme}:// URIs must not carry credentials or a query string; "
            "use the standard credential chain (environment, ~/.aws, instance role) and "
            "AWS_ENDPOINT_URL / AWS_REGION for options"
        )
    if not parts.netloc:
        raise StorageError(f"{redact(uri)!r}: no bucket in the URI")
    fs = _remote_filesystem(f"{parts.scheme}://{parts.netloc}")
    return fs, f"{parts.netloc}{parts.path}".rstrip("/")


def is_remote(uri: str) -> bool:
    """True for URIs of object stores or remote filesystems."""
    scheme = urlsplit(str(uri)).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # "" or a Windows drive letter
        return False
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"unsupported storage scheme {scheme}:// in {redact(uri)!r}")
    return True


def absolute(uri: str) -> str:
    """uri with a local path made absolute, so it means the same in every Ray worker."""
    if is_remote(uri):
        return uri
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def join(uri: str, *parts: str) -> str:
    """Child location of uri, keeping its scheme."""
    uri = str(uri)
    return posixpath.join(uri, *parts) if is_remote(uri) else os.path.join(uri, *parts)


def exists(uri: str) -> bool:
    """True if a file or directory exists at uri."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    """True if a file (object) exists at uri."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(uri: str) -> bytes:
    """Whole content of the file at uri; StorageError if it does not exist."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"{redact(uri)}: not found") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file so that readers see either nothing/the old content or all of the new one."""
    fs, path = resolve(uri)
    parent = posixpath.dirname(path) if is_remote(uri) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if is_remote(uri):  # one PUT: object stores publish an object whole or not at all
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    os.replace(tmp, path)


def read_json(uri: str) -> Any:
    """Parsed JSON document at uri."""
    return json.loads(read_bytes(uri))


def write_json(uri: str, doc: Any) -> None:
    """Atomically write doc as indented JSON."""
    write_bytes(uri, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at uri (or some of its columns) as an Arrow table."""
    return pq.read_table(io.BytesIO(read_bytes(uri)), columns=columns)


def write_parquet(uri: str, table: pa.Table, **options: Any) -> int:
    """Atomically write table as one Parquet file (options go to pyarrow); returns its size."""
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    data = sink.getvalue()
    write_bytes(uri, data)
    return len(data)


def list_files(uri: str) -> list[str]:
    """Names of the files directly under the directory uri, sorted ([] if it does not exist)."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def list_dirs(uri: str) -> list[str]:
    """Names of the directories directly under uri, sorted ([] if it does not exist)."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def remove(uri: str) -> None:
    """Delete one file; nothing happens if it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def remove_tree(uri: str) -> None:
    """Delete a directory and everything under it; nothing happens if it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def move_tree(src: str, dst: str) -> None:
    """Move the files of directory src to directory dst (dst must not exist yet)."""
    fs, src_path = resolve(src)
    _, dst_path = resolve(dst)
    if not is_remote(src):  # a rename: atomic on one local filesystem
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        os.replace(src_path, dst_path)
        return
    fs.create_dir(dst_path, recursive=True)
    for name in list_files(src):
        fs.move(f"{src_path}/{name}", f"{dst_path}/{name}")
    fs.delete_dir(src_path)


def file_size(uri: str) -> int:
    """Size in bytes of the file at uri."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).size


@functools.lru_cache(maxsize=16)
def _remote_filesystem(root: str) -> pafs.FileSystem:
    """One filesystem object per bucket and process (creating one resolves the bucket region)."""
    fs, _ = pafs.FileSystem.from_uri(root)
    return fs
