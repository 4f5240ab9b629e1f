"""What the files of a location are, beside their bytes: their versions (size and mtime), what a
local entry is when it is not a regular file, and whether one location lies inside another."""

from __future__ import annotations

import os
import stat

import pyarrow.fs as pafs

from fatlib.io.storage import absolute, is_remote, resolve


def file_versions(folder: str) -> dict[str, str]:
    """name -> "size:mtime_ns" of every regular file directly in folder (one listing, also on
    s3://): a file whose version changed was replaced or touched since it was last read."""
    fs, path = resolve(folder)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {i.base_name: f"{i.size}:{i.mtime_ns}" for i in infos
            if i.type == pafs.FileType.File}


def special_file_kind(uri: str) -> str | None:
    """What a local uri is when it is not a regular file ("a directory", "a FIFO (named pipe)",
    ...), found with stat (links followed) without opening it, so a FIFO never blocks a read;
    None for a regular file or a remote object. OSError when nothing readable is there (missing,
    a symlink loop, a folder without permission)."""
    if is_remote(uri):  # object stores hold only whole objects; a missing one fails its read
        return None
    mode = os.stat(resolve(uri)[1]).st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)",
             stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def contains(folder: str, uri: str) -> bool:
    """Whether uri is the location folder itself or lies inside it: real paths (links
    resolved) on local disk, scheme + bucket + key prefixes ending at a '/' on object stores."""
    return _inside(_location_key(uri), _location_key(folder))


def _location_key(uri: str) -> str:
    """A location compared as text: a local real path, or scheme://bucket/key without URL
    parsing (a '#' or '?' in a key is part of the key) and without trailing '/'."""
    if not is_remote(uri):
        return os.path.realpath(absolute(uri))
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{rest.strip('/')}"


def _inside(key: str, folder: str) -> bool:
    """Whether the location key is folder itself or under it (at a '/' boundary)."""
    return key == folder or key.startswith(folder.rstrip("/") + "/")
