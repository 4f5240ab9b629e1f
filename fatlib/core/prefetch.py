"""An iterator computed ahead on a background thread, so a training loop's next batch is read
and cut while the current step runs."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class Prefetched(Iterator[T]):
    """The items of an iterable, up to `depth` of them made ahead on a daemon thread.

    The producer's exception is raised by the consumer's next(), in order. Closing (or
    leaving a `with` block) stops the producer after the item it is making: a step that
    fails does not leave a thread reading data.
    """

    def __init__(self, items: Iterable[T], depth: int = 2, close_timeout: float = 10.0) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._close_timeout = close_timeout
        self._thread = threading.Thread(target=self._produce, args=(iter(items),),
                                        name="fatlib-prefetch", daemon=True)
        self._thread.start()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        if item is _DONE:
            self._done = True
            self._thread.join()
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer and wait for it, at most close_timeout seconds: a producer stuck
        inside its source (a read that never returns) is left behind, a daemon, so the error
        that ended the consumer still reaches its caller."""
        self._done = True
        self._stop.set()
        deadline = time.monotonic() + self._close_timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:  # unblock a producer waiting for room
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((_DONE, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((None, e))

    def _put(self, entry: tuple) -> bool:
        """Queue entry unless stopped; False once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
