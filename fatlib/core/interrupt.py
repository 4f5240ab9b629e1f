"""Ctrl-C that always ends a job, even when its KeyboardInterrupt is swallowed on the way."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator

# Long enough for a KeyboardInterrupt to unwind a stage (Ray calls return at once), short
# enough that Ctrl-C still feels like it works.
GRACE_S = 5.0
# What a forced exit still waits for: releases of shared state (an s3:// lock left behind
# blocks the next job until its TTL runs out); a hung request must not keep Ctrl-C from ending.
RELEASE_S = 3.0
_releases: list[Callable[[], None]] = []


@contextlib.contextmanager
def released_on_forced_exit(release: Callable[[], None]) -> Iterator[None]:
    """A block during which release() also runs (for at most RELEASE_S) if Ctrl-C's grace
    period runs out: the forced exit skips every finally block, the block's own included."""
    _releases.append(release)
    try:
        yield
    finally:
        _releases.remove(release)


def _release_all() -> None:
    """Run the registered releases, most recent first, waiting for them RELEASE_S at most."""
    def run() -> None:
        for release in reversed(list(_releases)):
            with contextlib.suppress(Exception):
                release()

    worker = threading.Thread(target=run, name="fatlib-release", daemon=True)
    worker.start()
    worker.join(RELEASE_S)


@contextlib.contextmanager
def ctrl_c_ends(name: str) -> Iterator[None]:
    """A block where Ctrl-C raises KeyboardInterrupt as usual, that block exits with it even if
    the exception was swallowed, and the process ends with status 130 (after
    "<name>: interrupted" and the releases of `released_on_forced_exit`) if the exception has
    not left the block GRACE_S seconds later.

    Python raises a signal's exception wherever the main thread is: inside an at-fork hook (Ray
    starts its processes with a preexec_fn, so logging's lock release runs after each fork) it
    was printed as "Exception ignored" and lost, and the job ran on (a 50-epoch run after
    Ctrl-C). Such a lost interrupt is raised again once the hook returns; one a stage caught is
    what the grace period is for. Only Python's own Ctrl-C handling is taken over, in the main
    thread: a job run in the background with SIGINT ignored, or one that set its own handler,
    keeps it.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pressed = threading.Event()
    lost = threading.Event()  # a KeyboardInterrupt Python could only print
    left = threading.Event()

    def after_ctrl_c() -> None:
        deadline = time.monotonic() + GRACE_S  # read now: tests shorten it
        while not left.wait(0.05):
            if lost.is_set():
                lost.clear()
                # Ctrl-C again, to the main thread, from here: a real signal ends a blocking
                # call there, and sent from the main thread itself its handler would raise
                # inside the hook again.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            elif time.monotonic() > deadline:
                print(f"{name}: interrupted", file=sys.stderr, flush=True)
                sys.stdout.flush()
                _release_all()
                os._exit(130)

    def on_ctrl_c(signum: int, frame: object) -> None:
        if not pressed.is_set():
            pressed.set()
            threading.Thread(target=after_ctrl_c, name="fatlib-ctrl-c", daemon=True).start()
        raise KeyboardInterrupt

    unraisable = sys.unraisablehook

    def on_unraisable(report: typing.Any) -> None:
        if isinstance(report.exc_value, KeyboardInterrupt):
            lost.set()
        else:
            unraisable(report)

    signal.signal(signal.SIGINT, on_ctrl_c)
    sys.unraisablehook = on_unraisable
    try:
        yield
        if pressed.is_set():  # swallowed, yet the block finished: still an interrupted job
            raise KeyboardInterrupt
    finally:
        left.set()
        sys.unraisablehook = unraisable
        signal.signal(signal.SIGINT, signal.default_int_handler)
