"""Every location in fatlib — a local path or an s3:// (or other pyarrow) URI — resolved here.

S3-compatible stores are reached through the standard AWS chain (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles); credentials never appear in
a URI, so they never reach logs, errors, manifests or metadata. Stages never special-case S3.
A remote URI is split at '://' and at the next '/' only: the rest is the object's key, verbatim
('#', '?', '%', '@' and spaces included), never parsed as a URL.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import posixpath
import re
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fatlib.core.errors import UserError, first_line, redact

REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "hdfs")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# What may stand between scheme:// and the first '/': a bucket (S3 and GCS bucket names hold
# only these characters), an Azure account host, or an HDFS host with its port. Never userinfo.
_AUTHORITY = re.compile(r"[A-Za-z0-9._-]+")
_HDFS_AUTHORITY = re.compile(r"[A-Za-z0-9._-]+(:[0-9]+)?")
# Characters a root location given as a flag must not hold: Ray Train and pyarrow's from_uri
# parse a run directory as a URL ('#' ends it, '%' escapes are decoded, a space is refused).
_URL_SYNTAX = re.compile(r"[#%\s]")


class StorageError(UserError):
    """A location is unusable: bad URI, credentials in it, missing object."""


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or a remote URI."""
    if not is_remote(uri):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    scheme, authority, key = _split(uri)
    _check_authority(uri, scheme, authority)
    fs = _remote_filesystem(f"{scheme}://{authority}")
    return fs, f"{authority}/{key}".rstrip("/")


def is_remote(uri: str) -> bool:
    """True for URIs of object stores or remote filesystems."""
    match = _SCHEME.match(str(uri))
    scheme = match.group(1).lower() if match else ""
    if scheme in ("", "file") or len(scheme) == 1:  # "" or a Windows drive letter
        return False
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"unsupported storage scheme {scheme}:// in {redact(uri)!r}")
    return True


def check_uri(uri: str) -> None:
    """StorageError unless uri can be a root location given by a user (a flag's value): a
    remote one names its bucket and holds no credentials, query or URL syntax; only the names
    of files below it may hold '@', '?', '#', '%' or spaces."""
    if not is_remote(uri):
        return
    scheme, authority, key = _split(uri)
    # Refused whole, before anything parses it: "s3://KEY:SEC/RET@bucket/x" has its secret's
    # '/' before the '@', so a secret can reach the key, and only the '@' betrays it.
    if "@" in uri or "?" in uri:
        raise _credentials_refused(uri, scheme)
    _check_authority(uri, scheme, authority)
    if _URL_SYNTAX.search(key):
        raise StorageError(f"{redact(uri)}: a location given as a flag must not hold '#', "
                           "'%' or white space (Ray and pyarrow read them as URL syntax); the "
                           "names of files below it may")


def absolute(uri: str) -> str:
    """uri with a local path made absolute, so it means the same in every Ray worker; a remote
    uri checked as a root location (check_uri)."""
    check_uri(uri)
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
    remote = is_remote(uri)
    try:
        fs.create_dir(posixpath.dirname(path) if remote else os.path.dirname(path),
                      recursive=True)
        if remote:  # one PUT: object stores publish an object whole or not at all
            with fs.open_output_stream(path) as f:
                f.write(data)
        else:
            _replace_local(fs, path, data)
    except (FileExistsError, NotADirectoryError):  # what creating its folder says of a file
        raise StorageError(f"{redact(uri)}: cannot write (a file stands where a folder of the "
                           "path should be)") from None
    except OSError as e:  # a full disk, no permission, a read-only disk
        raise _failed(uri, "cannot write", e) from None


def read_json(uri: str) -> Any:
    """Parsed JSON document at uri."""
    return json.loads(read_bytes(uri))


def write_json(uri: str, doc: Any) -> None:
    """Atomically write doc as indented JSON."""
    write_bytes(uri, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def read_parquet(uri: str, columns: list[str] | None = None,
                 if_present: bool = False) -> pa.Table:
    """The Parquet file at uri (or some of its columns: with if_present, those of them it has)
    as an Arrow table; StorageError naming it when it is not readable Parquet (truncated,
    corrupted)."""
    fs, path = resolve(uri)
    try:  # random access: the footer and these columns' bytes only (log-mels are most of a part)
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            if columns is not None and if_present:
                columns = [c for c in columns if c in parquet.schema_arrow.names]
            return parquet.read(columns=columns)
    except FileNotFoundError:
        raise StorageError(f"{redact(uri)}: not found") from None
    except (OSError, pa.ArrowException) as e:
        raise StorageError(redact(f"{uri}: not a readable Parquet file "
                                  f"({first_line(str(e), 200) or type(e).__name__})")) from None


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
    _delete(uri, pafs.FileType.File)


def remove_tree(uri: str) -> None:
    """Delete a directory and everything under it; nothing happens if it does not exist."""
    _delete(uri, pafs.FileType.Directory)


def _delete(uri: str, kind: pafs.FileType) -> None:
    """Delete what uri names if it is of this kind (a file or a directory tree)."""
    fs, path = resolve(uri)
    try:
        if fs.get_file_info(path).type == kind:
            (fs.delete_file if kind == pafs.FileType.File else fs.delete_dir)(path)
    except OSError as e:
        raise _failed(uri, "cannot delete", e) from None


def move_tree(src: str, dst: str) -> None:
    """Move the files of directory src to directory dst (dst must not exist yet)."""
    fs, src_path = resolve(src)
    _, dst_path = resolve(dst)
    try:
        if not is_remote(src):  # a rename: atomic on one local filesystem
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
            os.replace(src_path, dst_path)
            return
        fs.create_dir(dst_path, recursive=True)
        for name in list_files(src):
            fs.move(f"{src_path}/{name}", f"{dst_path}/{name}")
        fs.delete_dir(src_path)
    except OSError as e:
        raise _failed(dst, f"cannot move {redact(src)} here", e) from None


def file_size(uri: str) -> int:
    """Size in bytes of the file at uri."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).size


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, authority, key) of a remote uri: split at '://' and at the next '/' only."""
    scheme, sep, rest = uri.partition("://")
    if not sep:  # "s3:KEY:SECRET@bucket" is not shown either
        scheme = uri.partition(":")[0]
        raise StorageError(f"a {scheme}: URI without a bucket (expected {scheme}://bucket/...)")
    authority, _, key = rest.partition("/")
    return scheme.lower(), authority, key


def _check_authority(uri: str, scheme: str, authority: str) -> None:
    """StorageError unless authority can be the bucket (or host) of a scheme:// URI."""
    pattern = _HDFS_AUTHORITY if scheme == "hdfs" else _AUTHORITY
    if "@" in authority or (":" in authority and not pattern.fullmatch(authority)):
        raise _credentials_refused(uri, scheme)
    if not authority:
        raise StorageError(f"{redact(uri)!r}: no bucket in the URI")
    if not pattern.fullmatch(authority):
        raise StorageError(f"{redact(uri)}: not a bucket name after {scheme}://")


def _credentials_refused(uri: str, scheme: str) -> StorageError:
    """The one-line refusal of a URI that may carry credentials or options (never echoed)."""
    return StorageError(
        f"{redact(uri)}: {scheme}:// URIs must not carry credentials or a query string; use "
        "the standard credential chain (environment, ~/.aws, instance role) and "
        "AWS_ENDPOINT_URL / AWS_REGION for the endpoint and options")


def _replace_local(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write data to a temporary file beside path, then rename it over path."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:  # a failed or interrupted write leaves no temporary file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _failed(uri: str, action: str, e: OSError) -> StorageError:
    """One line naming the location and why the filesystem refused (redacted)."""
    reason = os.strerror(e.errno) if e.errno else (first_line(str(e)) or type(e).__name__)
    return StorageError(redact(f"{uri}: {action} ({reason})"))


@functools.lru_cache(maxsize=16)
def _remote_filesystem(root: str) -> pafs.FileSystem:
    """One filesystem object per bucket and process (creating one resolves the bucket region)."""
    fs, _ = pafs.FileSystem.from_uri(root)
    return fs
