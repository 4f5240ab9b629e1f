"""The lock a job holds on the directory it writes (a run, a K-fold or Tune experiment, a feature
store, a predictions root): a second job on that directory stops at once, in one line, instead
of mixing its files with the first's. Taking it is also the up-front check that --out is usable.

Locally an `flock` on <dir>/_LOCK, which the OS drops when the process dies (kill -9 included);
on s3:// a conditional PUT of <dir>/_LOCK, kept alive by a heartbeat and taken over once the
heartbeat is older than a TTL, so a crashed job blocks nobody for long. The lock is advisory,
between jobs: the workers of the job that holds it write freely. Other remote schemes are not
locked (no conditional write through pyarrow).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from fatlib.core.errors import UserError, redact
from fatlib.core.interrupt import released_on_forced_exit
from fatlib.io import storage

LOCK_FILE = "_LOCK"  # not data: readers of a run, store or predictions root skip it
TTL_SECONDS = 120.0  # an S3 lock whose heartbeat is older than this is a crashed job's
HEARTBEAT_SECONDS = 30.0


class DirectoryInUse(UserError):
    """Another job holds the lock on the directory this job would write."""


class DirectoryUnusable(UserError):
    """The directory this job would write cannot be written (a file, read-only, disk full)."""


@contextlib.contextmanager
def hold(uri: str, job: str, *, ttl: float = TTL_SECONDS,
         heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Hold the lock on directory uri (created if missing) while the with-block runs.

    DirectoryInUse if another job holds it, DirectoryUnusable if uri cannot be written.
    ttl and heartbeat (seconds) apply to s3:// locks only.
    """
    uri = storage.absolute(uri)
    if not storage.is_remote(uri):
        lock: Any = _LocalLock(uri, job)
    elif uri.partition("://")[0].lower() == "s3":
        # Imported here: boto3 costs a local job's start a second and it needs none of it.
        from fatlib.io.s3_lock import S3Lock

        lock = S3Lock(uri, job, ttl, heartbeat)
    else:
        yield
        return
    lock.acquire()
    try:
        # A local flock dies with the process; a remote lock would outlive a forced exit
        # (Ctrl-C's grace run out) and block the next job for its TTL.
        remote = storage.is_remote(uri)
        with released_on_forced_exit(lock.release) if remote else contextlib.nullcontext():
            yield
    finally:
        lock.release()


def holding(job: str, directory: Callable[[Any], str] = attrgetter("out")) -> Callable:
    """Decorator: the stage function holds the lock on directory(its first argument) -- the
    config's --out by default -- for the whole call, taken before it does anything else."""
    def decorate(stage: Callable) -> Callable:
        @functools.wraps(stage)
        def locked(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            with hold(directory(cfg), job):
                return stage(cfg, *args, **kwargs)
        return locked
    return decorate


def owner_doc(job: str) -> dict:
    """Who holds a lock: the job's name, process, host and start time (UTC)."""
    return {"job": job, "pid": os.getpid(), "host": socket.gethostname(), "started": now()}


class _LocalLock:
    """flock on <dir>/_LOCK; the directories it had to create go again if left empty."""

    def __init__(self, path: str, job: str) -> None:
        self.path, self.job = path, job
        self.file = os.path.join(path, LOCK_FILE)
        self.created: list[str] = []
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.created = _make_dirs(self.path)
            self.fd = self._lock()
            _write_all(self.fd, json.dumps(owner_doc(self.job)).encode())
        except OSError as e:
            self.release()
            raise DirectoryUnusable(unusable_line(self.path, _os_reason(e))) from None

    def release(self) -> None:
        if self.fd is not None:
            # Unlinked while still locked: a job that opened this file meanwhile sees, once
            # it has the flock, that the file is no longer the lock (_lock compares inodes).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)
            os.close(self.fd)
            self.fd = None
        for folder in reversed(self.created):
            try:
                os.rmdir(folder)  # only if the job left it empty
            except OSError:
                break
        self.created = []

    def _lock(self) -> int:
        """An open descriptor of the lock file holding the flock; DirectoryInUse if taken."""
        for _ in range(10):
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DirectoryInUse(in_use_line(self.path, _local_owner(self.file))) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.file).st_ino == os.fstat(fd).st_ino:
                    return fd
            os.close(fd)  # the holder before released (and removed) it in between: again
        raise DirectoryInUse(in_use_line(self.path, None))


def _make_dirs(path: str) -> list[str]:
    """Create directory path and its missing parents; those created, outermost first."""
    for _ in range(10):
        try:
            return _make_missing(path)
        except FileNotFoundError:  # a parent another job had made went with its release
            continue
    return _make_missing(path)


def _make_missing(path: str) -> list[str]:
    """One pass of _make_dirs."""
    missing = []
    folder = path
    while not os.path.isdir(folder):
        if os.path.lexists(folder):
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a directory")
        missing.append(folder)
        folder = os.path.dirname(folder)
    created = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
            created.append(folder)
        except FileExistsError:  # another job made it meanwhile
            if not os.path.isdir(folder):
                raise
    return created


def _write_all(fd: int, data: bytes) -> None:
    """Replace the lock file's content; on disk, so a full disk shows here, before any work."""
    os.ftruncate(fd, 0)
    view = memoryview(data)
    while view:
        view = view[os.pwrite(fd, view, len(data) - len(view)):]
    os.fsync(fd)


def _local_owner(file: str) -> dict | None:
    """The owner written in a local lock file (None if it cannot be read yet)."""
    for _ in range(20):  # the holder writes it just after taking the lock
        with contextlib.suppress(OSError):
            with open(file, "rb") as f:
                owner = parse_owner(f.read())
            if owner is not None:
                return owner
        time.sleep(0.05)
    return None


def parse_owner(data: bytes) -> dict | None:
    """The owner document in a lock file's bytes, None if it is not one."""
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def in_use_line(uri: str, owner: dict | None) -> str:
    """The one line a second job prints."""
    return (f"{redact(uri)} is in use by {who(owner)}; wait for it or choose another --out")


def who(owner: dict | None) -> str:
    """'train (pid 12 on host h since 2026-...)', or 'another job' when unknown."""
    if not owner:
        return "another job"
    return (f"{owner.get('job', 'a job')} (pid {owner.get('pid', '?')} on host "
            f"{owner.get('host', '?')} since {owner.get('started', '?')})")


def unusable_line(uri: str, reason: str) -> str:
    """The one line for an --out that cannot be written."""
    return f"{redact(uri)} cannot be written: {redact(reason)}; choose another --out"


def _os_reason(e: OSError) -> str:
    """An OSError as words with the path it concerns."""
    if isinstance(e, NotADirectoryError) and e.filename is None:
        return str(e.strerror)
    return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


def now() -> str:
    """The current UTC time, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
