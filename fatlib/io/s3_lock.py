"""The directory lock on s3://: <dir>/_LOCK created with a conditional PUT (If-None-Match), kept
alive by a heartbeat (If-Match on its ETag) and taken over once the heartbeat is older than a
TTL, so a crashed job blocks nobody for long (io.locks.hold picks it for s3:// locations)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import threading

import boto3
import botocore.exceptions

from fatlib.core.errors import redact
from fatlib.io import locks, storage

# S3's answers to a conditional PUT that lost: the object exists / its ETag moved on, or
# another conditional write to the key was in flight.
_LOST = ("PreconditionFailed", "ConditionalRequestConflict")


class S3Lock:
    """<dir>/_LOCK created with If-None-Match, refreshed with If-Match on its ETag."""

    def __init__(self, uri: str, job: str, ttl: float, heartbeat: float) -> None:
        _, path = storage.resolve(uri)  # refuses credentials or a query in the URI
        self.uri, self.ttl, self.period = uri, ttl, heartbeat
        self.bucket, _, prefix = path.partition("/")
        self.key = f"{prefix}/{locks.LOCK_FILE}" if prefix else locks.LOCK_FILE
        self.owner = locks.owner_doc(job)
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
            raise locks.DirectoryUnusable(locks.unusable_line(self.uri, f"{error.get('Code')}: "
                                                        f"{error.get('Message')}")) from None
        except botocore.exceptions.BotoCoreError as e:
            raise locks.DirectoryUnusable(locks.unusable_line(self.uri, str(e))) from None
        self.beat = threading.Thread(target=self._heartbeat, name=f"lock {self.key}",
                                     daemon=True)
        self.beat.start()

    def release(self) -> None:
        self.stop.set()
        if self.beat is not None:
            self.beat.join()
        # Taken under the guard: a forced exit (Ctrl-C) may release from another thread too.
        with self.guard:
            etag, self.etag = self.etag, None
        if etag is None:
            return
        with contextlib.suppress(botocore.exceptions.ClientError,
                                 botocore.exceptions.BotoCoreError):
            # If-Match: a lock taken over from us stays its owner's.
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)

    def _take(self) -> None:
        """Create the lock object, or take over a stale one; locks.DirectoryInUse if it is live."""
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
                raise locks.DirectoryInUse(locks.in_use_line(self.uri, owner))
            try:
                self.etag = self._put(IfMatch=etag)
            except botocore.exceptions.ClientError as e:
                if _code(e) not in _LOST:
                    raise
                continue  # another job took it over first, or its owner woke up
            print(f"{redact(self.uri)}: took over the lock of {locks.who(owner)}, whose last "
                  f"heartbeat was {age:.0f} s ago", file=sys.stderr, flush=True)
            return
        raise locks.DirectoryInUse(locks.in_use_line(self.uri, None))

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
        return locks.parse_owner(body), got["ETag"], (now - got["LastModified"]).total_seconds()

    def _put(self, **condition: str) -> str:
        """PUT the owner document with a condition; its new ETag."""
        doc = {**self.owner, "heartbeat": locks.now()}
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


def _code(e: botocore.exceptions.ClientError) -> str:
    """The S3 error code of a failed request."""
    return str(e.response.get("Error", {}).get("Code", ""))
