"""Publishing a feature store split: the commit that moves a staged split into place and lists
it in the manifest, deleting only the files the store wrote (docs/ARCHITECTURE.md, "The store
deletes only what it wrote")."""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Collection

from fatlib.io import storage
from fatlib.io.feature_store import ERRORS_FILE, MANIFEST, SplitInfo

# Manifest key: split -> names of the files a commit in progress may leave in the split's folder,
# written before it touches the folder, so that the next commit or rebuild deletes exactly them.
UNCOMMITTED = "uncommitted"


def commit_split(root: str, manifest: dict, staged: str, info: SplitInfo,
                 keep: Collection[str] = ()) -> None:
    """Publish a split written under `staged`: move its files into place, then list it.

    keep: files of the committed version that stay where they are (an incremental update);
    the version's other files (owned_files) are deleted, and nothing else in the folder.
    """
    final = storage.join(root, info.name)
    new = set(storage.list_files(staged))
    old = owned_files(manifest, info.name)
    manifest["splits"].pop(info.name, None)  # unpublish any older version, and record what
    manifest.setdefault(UNCOMMITTED, {})[info.name] = sorted(old | new)  # this commit may leave
    storage.write_json(storage.join(root, MANIFEST), manifest)
    for name in sorted(old - set(keep) - new):  # files named as new ones are replaced by them
        storage.remove(storage.join(final, name))
    if storage.exists(final):  # the user's files there, or files this store keeps, stay
        _move_files(staged, final)
    else:
        storage.move_tree(staged, final)
    del manifest[UNCOMMITTED][info.name]
    if not manifest[UNCOMMITTED]:
        del manifest[UNCOMMITTED]
    manifest["splits"][info.name] = {
        "files": info.files,
        "rows": info.rows,
        "errors": info.errors,
        "errors_file": f"{info.name}/{ERRORS_FILE}",
        "audio_seconds": round(info.audio_seconds, 3),
        "frames": info.frames,
        "bytes": info.bytes,
        "wall_seconds": round(info.wall_seconds, 3),
        "clips_digest": info.clips_digest,
        "versions_digest": info.versions_digest,
        "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_json(storage.join(root, MANIFEST), manifest)


def owned_files(manifest: dict, split: str) -> set[str]:
    """Names of the files the store wrote, or may have begun writing, in <root>/<split>/: the
    committed version's parts and errors table, and those of a commit that did not finish."""
    owned = set(manifest.get(UNCOMMITTED, {}).get(split, []))
    entry = manifest["splits"].get(split)
    if entry is not None:
        owned |= {*entry["files"], ERRORS_FILE}
    return owned


def discard_store(root: str, manifest: dict, fresh: dict) -> None:
    """Replace a store's manifest by `fresh` (a rebuild with another configuration) and delete
    every file the old one owned; nothing else under root is touched."""
    owned = {split: sorted(owned_files(manifest, split))
             for split in {*manifest["splits"], *manifest.get(UNCOMMITTED, {})}}
    # Recorded first: a job killed while deleting leaves them to the next commit of the split.
    fresh[UNCOMMITTED] = owned
    storage.write_json(storage.join(root, MANIFEST), fresh)
    for split, names in sorted(owned.items()):
        for name in names:
            storage.remove(storage.join(root, split, name))
    del fresh[UNCOMMITTED]
    storage.write_json(storage.join(root, MANIFEST), fresh)


def _move_files(staged: str, final: str) -> None:
    """Move every file of the folder staged into the existing folder final; drop staged."""
    fs, src = storage.resolve(staged)
    _, dst = storage.resolve(final)
    for name in storage.list_files(staged):
        fs.move(posixpath.join(src, name), posixpath.join(dst, name))
    storage.remove_tree(staged)
