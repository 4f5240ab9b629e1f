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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions

from fatlib.core.errors import UserError, redact
from fatlib.io import storage

LOCK_FILE = "_LOCK"  # not data: readers of a run, store or predictions root skip it
TTL_SECONDS = 120.0  # an S3 lock whose heartbeat is older than this is a crashed job's
HEARTBEAT_SECONDS = 30.0
# S3's answers to a conditional PUT that lost: the object exists / its ETag moved on, or
# another conditional write to the key was in flight.
_LOST = ("PreconditionFailed", "ConditionalRequestConflict")


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
        lock: _LocalLock | _S3Lock = _LocalLock(uri, job)
    elif urlsplit(uri).scheme == "s3":
        lock = _S3Lock(uri, job, ttl, heartbeat)
    else:
        yield
        return
    lock.acquire()
    try:
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
    return {"job": job, "pid": os.getpid(), "host": socket.gethostname(), "started": _now()}


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
            raise DirectoryUnusable(_unusable(self.path, _os_reason(e))) from None

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
                raise DirectoryInUse(_in_use(self.path, _local_owner(self.file))) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.file).st_ino == os.fstat(fd).st_ino:
                    return fd
            os.close(fd)  # the holder before released (and removed) it in between: again
        raise DirectoryInUse(_in_use(self.path, None))


class _S3Lock:
    """<dir>/_LOCK created with If-None-Match, refreshed with If-Match on its ETag."""

    def __init__(self, uri: str, job: str, ttl: float, heartbeat: float) -> None:
        _, path = storage.resolve(uri)  # refuses credentials or a query in the URI
        self.uri, self.ttl, self.period = uri, ttl, heartbeat
        self.bucket, _, prefix = path.partition("/")
        self.key = f"{prefix}/{LOCK_FILE}" if prefix else LOCK_FILE
        self.owner = owner_doc(job)
        self.etag: str | None = None
        self.client = boto3.client("s3")  # the AWS chain, AWS_ENDPOINT_URL included
        self.guard = threading.Lock()  # one request on the lock object at a time
        self.stop = threading.Event()
        self.beat: threading.Thread | None = None

    def acquire(self) -> None:
        try:
            self._take()
        except botocore.exceptions.ClientError as e:
            error = e.response.get("Error", {})
            raise DirectoryUnusable(_unusable(self.uri, f"{error.get('Code')}: "
                                                        f"{error.get('Message')}")) from None
        except botocore.exceptions.BotoCoreError as e:
            raise DirectoryUnusable(_unusable(self.uri, str(e))) from None
        self.beat = threading.Thread(target=self._heartbeat, name=f"lock {self.key}",
                                     daemon=True)
        self.beat.start()

    def release(self) -> None:
        self.stop.set()
        if self.beat is not None:
            self.beat.join()
        with self.guard, contextlib.suppress(botocore.exceptions.ClientError,
                                             botocore.exceptions.BotoCoreError):
            if self.etag is not None:  # If-Match: a lock taken over from us stays its owner's
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        self.etag = None

    def _take(self) -> None:
        """Create the lock object, or take over a stale one; DirectoryInUse if it is live."""
        for _ in range(10):
            try:
                self.etag = self._put(IfNoneMatch="*")
                return
            except botocore.exceptions.ClientError as e:
                if _code(e) not in _LOST:
                    raise
            held = self._current()
            if held is None:  # released in between: try again
                continue
            owner, etag, age = held
            if age < self.ttl:
                raise DirectoryInUse(_in_use(self.uri, owner))
            try:
                self.etag = self._put(IfMatch=etag)
            except botocore.exceptions.ClientError as e:
                if _code(e) not in _LOST:
                    raise
                continue  # another job took it over first, or its owner woke up
            print(f"{redact(self.uri)}: took over the lock of {_who(owner)}, whose last "
                  f"heartbeat was {age:.0f} s ago", file=sys.stderr, flush=True)
            return
        raise DirectoryInUse(_in_use(self.uri, None))

    def _current(self) -> tuple[dict | None, str, float] | None:
        """(owner, ETag, seconds since its last heartbeat) of the lock object, None if gone.

        The age is the server's clock against the server's clock (its Date header and the
        object's LastModified), so clock skew between hosts does not make a lock stale."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        body = got["Body"].read()
        date = got["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = (dt.datetime.strptime(date, "%a, %d %b %Y %H:%M:%S GMT").replace(
            tzinfo=dt.timezone.utc) if date else dt.datetime.now(dt.timezone.utc))
        return _parse_owner(body), got["ETag"], (now - got["LastModified"]).total_seconds()

    def _put(self, **condition: str) -> str:
        """PUT the owner document with a condition; its new ETag."""
        doc = {**self.owner, "heartbeat": _now()}
        return self.client.put_object(Bucket=self.bucket, Key=self.key,
                                      Body=json.dumps(doc).encode(), **condition)["ETag"]

    def _heartbeat(self) -> None:
        """Refresh the lock every period until released; stop if another job took it over."""
        while not self.stop.wait(self.period):
            with self.guard:
                if self.stop.is_set():
                    return
                try:
                    self.etag = self._put(IfMatch=self.etag)
                except botocore.exceptions.ClientError as e:
                    if _code(e) in _LOST:
                        print(f"{redact(self.uri)}: another job took over this job's lock "
                              "(its heartbeat was late)", file=sys.stderr, flush=True)
                        self.etag = None
                        return
                except botocore.exceptions.BotoCoreError:
                    pass  # a network hiccup: the next beat tries again, well within the TTL


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
                owner = _parse_owner(f.read())
            if owner is not None:
                return owner
        time.sleep(0.05)
    return None


def _parse_owner(data: bytes) -> dict | None:
    """The owner document in a lock file's bytes, None if it is not one."""
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _in_use(uri: str, owner: dict | None) -> str:
    """The one line a second job prints."""
    return (f"{redact(uri)} is in use by {_who(owner)}; wait for it or choose another --out")


def _who(owner: dict | None) -> str:
    """'train (pid 12 on host h since 2026-...)', or 'another job' when unknown."""
    if not owner:
        return "another job"
    return (f"{owner.get('job', 'a job')} (pid {owner.get('pid', '?')} on host "
            f"{owner.get('host', '?')} since {owner.get('started', '?')})")


def _unusable(uri: str, reason: str) -> str:
    """The one line for an --out that cannot be written."""
    return f"{redact(uri)} cannot be written: {redact(reason)}; choose another --out"


def _os_reason(e: OSError) -> str:
    """An OSError as words with the path it concerns."""
    if isinstance(e, NotADirectoryError) and e.filename is None:
        return str(e.strerror)
    return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


def _code(e: botocore.exceptions.ClientError) -> str:
    """The S3 error code of a failed request."""
    return str(e.response.get("Error", {}).get("Code", ""))


def _now() -> str:
    """The current UTC time, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
