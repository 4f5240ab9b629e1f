"""The driver's stderr through a filter: the lines Ray's C++ core worker writes there that are
no news to a user go to Ray's log records; the rest reaches the console unchanged."""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading

# What the driver's core worker (Ray's C++) writes to stderr that is no news to a user: Ray
# Data's actor pools always pass their context by object reference and ask for restarts, so
# Ray warns about every inference (ray-project/ray#53727). The references are the driver's for
# the whole run, so a restarted scoring actor finds them.
_HARMLESS_CORE_LINES = (b"has constructor arguments in the object store and max_restarts > 0",)
_CORE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z] \d+ \d+\] ")
_HOLD_SECONDS = 0.2  # a partial line that may be Ray's waits this long for the rest
_DRAIN_SECONDS = 2.0


class CoreLines:
    """This process's stderr (fd 2) through a pipe, so that the lines Ray's C++ core worker
    writes there and that are no news to a user (_HARMLESS_CORE_LINES) go to Ray's log records
    instead; everything else reaches the console unchanged, partial lines (progress bars) at
    once. Ray's C++ logger writes to fd 2 itself, past Python's logging."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._console = os.dup(2)
        self._read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._forward, name="fatlib-stderr",
                                        daemon=True)
        self._thread.start()
        self._closed = False
        atexit.register(self.close)  # a traceback printed as the process ends is shown too

    def close(self) -> None:
        """stderr back to the console, once what is in the pipe has been shown."""
        if self._closed:
            return
        self._closed = True
        sys.stderr.flush()
        os.dup2(self._console, 2)  # the pipe's last write end: the thread reads to its end
        self._thread.join(_DRAIN_SECONDS)
        if not self._thread.is_alive():  # else a child still holds the pipe: leave it be
            os.close(self._console)

    def _forward(self) -> None:
        """Copy the pipe to the console until its end, line by line where a line may be Ray's."""
        held, passing = b"", False  # held: a line start that may be Ray's; passing: mid-line
        while True:
            ready, _, _ = select.select([self._read], [], [], _HOLD_SECONDS if held else None)
            if not ready:  # nothing completes the held line: it is not one of Ray's
                self._show(held)
                held, passing = b"", True
                continue
            chunk = os.read(self._read, 65536)
            if not chunk:
                break
            held, passing = self._lines(held + chunk, passing)
        self._show(held)
        os.close(self._read)

    def _lines(self, data: bytes, passing: bool) -> tuple[bytes, bool]:
        """Show or log the whole lines in data; (what is held back, whether mid-line)."""
        while data:
            end = data.find(b"\n") + 1  # 0: no line end in data
            if passing or not data.startswith(b"["):  # Ray's lines start with "[<time>"
                part = data[:end] if end else data
                self._show(part)
                data, passing = data[len(part):], not end
            elif not end:
                return data, False
            else:
                line, data = data[:end], data[end:]
                if _CORE_LINE.match(line) and any(s in line for s in _HARMLESS_CORE_LINES):
                    text = line.decode(errors="replace").rstrip()
                    logging.getLogger("ray").warning("core worker: %s", text)
                else:
                    self._show(line)
        return b"", passing

    def _show(self, data: bytes) -> None:
        """Write data to the console (nothing if it is gone)."""
        try:
            while data:
                data = data[os.write(self._console, data):]
        except OSError:
            pass
