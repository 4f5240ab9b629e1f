"""What a job's console shows: the job's own lines, what Ray workers print (the training table)
and, in a terminal, progress bars. Ray's own logs go to a file in the Ray session's log
directory, named in one line; `--verbose` shows them on the console as Ray prints them.

A failure of Ray work (a task, an actor, a Ray Data UDF, a Ray Train worker) is one line too:
a user error's own message (exit 2), or the root cause and the log file holding the whole
traceback (exit 1)."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import re
import select
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import ray
import ray.data

from fatlib.core.cli import run_job
from fatlib.core.errors import UserError, redact

DRIVER_LOG = "fatlib-driver.log"  # in <session>/logs, beside the logs of Ray's own processes
_RAY_HANDLER = "ray_print_logs"  # the name Ray registers its worker-output printer under
_OUR_HANDLER = "fatlib_print_logs"
_QUIET_SECONDS = 1.0  # worker output reaches the driver through Ray's log monitor, ~0.1-1 s late
_SETTLE_LIMIT_SECONDS = 5.0
# What the driver's core worker (Ray's C++) writes to stderr that is no news to a user: Ray
# Data's actor pools always pass their context by object reference and ask for restarts, so
# Ray warns about every inference (ray-project/ray#53727). The references are the driver's for
# the whole run, so a restarted scoring actor finds them.
_HARMLESS_CORE_LINES = (b"has constructor arguments in the object store and max_restarts > 0",)
_CORE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z] \d+ \d+\] ")
_HOLD_SECONDS = 0.2  # a partial line that may be Ray's waits this long for the rest
_DRAIN_SECONDS = 2.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The line of a Python traceback naming the exception: `module.Type: message` after a frame.
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?:: (?P<message>.*))?$")
T = TypeVar("T")


@dataclass
class _Console:
    """This process's console settings (one per process, as the console is)."""

    quiet: bool = False  # a job asked for a readable console: Ray's logs go to a file
    pending: logging.handlers.MemoryHandler | None = None  # Ray's records until the file exists
    last_output: float = 0.0  # when a worker's line last reached this console (monotonic)
    logs: str | None = None  # the Ray session's log directory, once attached
    core_lines: CoreLines | None = None  # stderr through the filter of Ray's C++ lines


_console = _Console()


def setup(verbose: bool) -> None:
    """Give a job's console to the job: Ray's log records off it unless verbose (then nothing
    changes). Call once, before the stage starts Ray."""
    if verbose or _console.quiet:
        return
    _console.quiet = True
    # Kept in memory until Ray's session directory exists (records come before it: ray.init
    # warns about token authentication while it starts).
    _console.pending = logging.handlers.MemoryHandler(capacity=1_000_000,
                                                      flushLevel=logging.CRITICAL + 1)
    logging.getLogger("ray").addHandler(_console.pending)
    quiet_ray_loggers()
    ray_warnings_to_log()


def run_ray_job(name: str, verbose: bool, stage: Callable[[], T],
                summary: Callable[[T], str]) -> int:
    """core.cli.run_job for a stage that starts Ray: the console is the job's (see setup), the
    summary comes after the workers' last lines (see settle), and a failure of Ray work is one
    line (see failure_line)."""
    setup(verbose)
    # A Ray Data UDF's own exception reaches the driver (inside a RayTaskError), not Ray Data's
    # UserCodeException holding its text only: failure_line then knows a UserError by its type.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    try:
        status = run_job(name, lambda: settle(stage()), summary,
                         explain=lambda error: failure_line(error, verbose))
    finally:
        if _console.core_lines is not None:
            _console.core_lines.close()
            _console.core_lines = None
    if status == 130:
        # Ctrl-C leaves the stage's thread inside Ray calls (runtime.interruptible): Ray's own
        # shutdown at interpreter exit can then crash in its core worker (the job once ended
        # with SIGSEGV instead of 130 in the test suite). The embedded Ray's processes end with
        # this one either way.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


@dataclass(frozen=True)
class RootCause:
    """The innermost failure behind an exception that reached the driver."""

    kind: str  # its type's name, e.g. ValueError
    message: str  # the first line of its message
    user: bool  # a fatlib UserError: the user can fix it
    notes: tuple[str, ...] = ()  # what it was working on (PEP 678 notes: the clips of a batch)
    through_ray: bool = False  # it came from Ray work (a task, actor, UDF, Train worker)

    def __str__(self) -> str:
        """'ValueError: message (note; note)'."""
        text = f"{self.kind}: {self.message}" if self.message else self.kind
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")


def failure_line(error: Exception, verbose: bool = False) -> tuple[int, str] | None:
    """core.cli.run_job's explain for jobs on Ray: (2, its message) when the root cause is a
    UserError, wherever Ray raised it; (1, the root cause and the log file that holds the whole
    traceback) for any other failure of Ray work; None (a traceback) for a failure on the
    driver itself, and with --verbose for all but user errors."""
    cause = root_cause(error)
    if cause.user:
        return 2, cause.message
    if verbose or not cause.through_ray:
        return None
    log = _log_failure(error)
    if log is None:
        return None
    return 1, f"{cause} (full traceback in {log})"


def root_cause(error: BaseException) -> RootCause:
    """The innermost failure behind error: through the wrappers Ray raises on the driver (a
    task's or actor's RayTaskError, Ray Data's UserCodeException, an actor whose constructor
    failed, Ray Train's worker-group and controller errors) and __cause__ chains, stopping at
    the first UserError."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if isinstance(current, UserError) and not _from_ray(current):
            break
        current = _inner(current)
    through_ray = any(_from_ray(e) for e in chain)
    last = chain[-1]
    if _from_ray(last):  # only text crossed from the worker (an actor's constructor failed)
        for wrapper in reversed(chain):
            found = _cause_in_text(str(wrapper))
            if found is not None:
                return found
    return RootCause(type(last).__name__, _first_line(str(last)), isinstance(last, UserError),
                     tuple(str(n) for n in getattr(last, "__notes__", ())), through_ray)


def log_dir() -> str | None:
    """The Ray session's log directory (None before Ray runs on this machine)."""
    if _console.logs is not None:
        return _console.logs
    node = ray._private.worker._global_node if ray.is_initialized() else None
    return node.get_logs_dir_path() if node is not None else None


def is_quiet() -> bool:
    """Whether a job has taken the console (see setup)."""
    return _console.quiet


def quiet_ray_loggers() -> None:
    """Raise every console handler of Ray's loggers to CRITICAL; their files keep everything.

    Errors too: a failure of Ray work reaches the console as the job's one line (failure_line),
    while Ray Data logs the same failure at ERROR with its tracebacks (146 lines for one full
    disk). Ray configures its loggers as its modules are imported (Ray Data's, Train's), so this
    runs again once Ray has started."""
    names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL)


def ray_warnings_to_log() -> None:
    """Python warnings raised in Ray's code go to Ray's log records (the driver log file)
    instead of the console; others show as Python shows them.

    Ray Data warns with a UserWarning when an actor pool gets fewer blocks than it has actors
    (a small inference), advice meant for whoever tunes the pipeline.
    """
    if getattr(warnings.showwarning, "fatlib_routed", False):
        return
    show_as_python_does = warnings.showwarning
    ray_code = str(Path(ray.__file__).parent) + os.sep

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if not str(filename).startswith(ray_code):
            show_as_python_does(message, category, filename, lineno, file, line)
            return
        logging.getLogger("ray").warning("%s:%s: %s: %s", filename, lineno,
                                         category.__name__, message)

    showwarning.fatlib_routed = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def attach() -> str:
    """Once Ray runs: its driver-side records go to <session>/logs/fatlib-driver.log, workers'
    stdout to this console without Ray's prefixes; returns the log directory."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    _console.logs = str(logs)
    quiet_ray_loggers()
    if _console.pending is not None and _console.pending.target is None:
        file = logging.FileHandler(logs / DRIVER_LOG)
        file.setFormatter(logging.Formatter(
            "%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- %(message)s"))
        _console.pending.setTarget(file)
        _console.pending.flush()
    # Ray's printer puts "(RayTrainWorker pid=...)" and colour codes before every line and
    # forwards workers' stderr: the log records of every Ray actor and task.
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    global_worker_stdstream_dispatcher.remove_handler(_RAY_HANDLER)
    global_worker_stdstream_dispatcher.remove_handler(_OUR_HANDLER)
    global_worker_stdstream_dispatcher.add_handler(_OUR_HANDLER, _show_worker_stdout)
    raylet_messages_to_log()
    if _console.core_lines is None:  # after ray.init: Ray's own processes keep their stderr
        try:
            _console.core_lines = CoreLines()
        except OSError:  # no stderr to filter (closed)
            pass
    return str(logs)


def raylet_messages_to_log() -> None:
    """The raylet's messages to drivers go to Ray's log records (the driver log file) instead
    of the console, like Ray's other logs.

    Ray prints them on stdout from its error-listener thread, bypassing the worker-output
    printer: e.g. "N PYTHON worker processes have been started ... the maximum expected
    startup concurrency" several times a run when --folds all starts K folds on 2 CPUs.
    """
    from ray._private import worker

    if getattr(worker.print_to_stdstream, "fatlib_routed", False):
        return
    print_as_ray_does = worker.print_to_stdstream

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            print_as_ray_does(data, ignore_prefix)
            return
        for line in data.get("lines", []):
            logging.getLogger("ray").warning("raylet: %s", line)

    print_to_stdstream.fatlib_routed = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


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


def settle(result: T) -> T:
    """result, once the workers' lines still on their way to this console have arrived (they
    follow the work they describe by up to a second)."""
    if not (_console.quiet and ray.is_initialized()):
        return result
    started = time.monotonic()
    while time.monotonic() - started < _SETTLE_LIMIT_SECONDS:
        if time.monotonic() - max(started, _console.last_output) >= _QUIET_SECONDS:
            break
        time.sleep(0.1)
    return result


def _inner(error: BaseException) -> BaseException | None:
    """The exception error wraps: a RayTaskError's cause, a Ray Train controller's failure, a
    failed worker group's user error (else its first rank's failure), or error.__cause__."""
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(error.cause, BaseException):
        return error.cause
    train = sys.modules.get("ray.train.v2.api.exceptions")  # only if Ray Train is in use
    if train is not None and isinstance(error, train.ControllerError):
        return error.controller_failure
    if train is not None and isinstance(error, train.WorkerGroupError) and error.worker_failures:
        failures = [failure for _, failure in sorted(error.worker_failures.items())]
        return next((f for f in failures if isinstance(f, UserError)), failures[0])
    return error.__cause__


def _from_ray(error: BaseException) -> bool:
    """Whether error is one of Ray's exceptions (its wrappers included)."""
    return type(error).__module__.split(".")[0] == "ray"


def _cause_in_text(text: str) -> RootCause | None:
    """The innermost exception a traceback text names, if not one of Ray's: a traceback
    prints the innermost cause first, `module.Type: message` after its last frame."""
    lines = _ANSI.sub("", text).splitlines()
    for before, line in zip(lines[:-1], lines[1:], strict=True):
        found = _EXCEPTION_LINE.match(line)
        if found is None or not before.startswith(" ") or found["type"].startswith("ray."):
            continue
        return RootCause(found["type"].rpartition(".")[2], (found["message"] or "").strip(),
                         _names_user_error(found["type"]), through_ray=True)
    return None


def _names_user_error(qualified: str) -> bool:
    """Whether `module.Type` is a UserError of fatlib's already loaded here (never imports)."""
    module, _, name = qualified.rpartition(".")
    found = getattr(sys.modules.get(module), name, None) if module.startswith("fatlib") else None
    return isinstance(found, type) and issubclass(found, UserError)


def _first_line(text: str) -> str:
    """The first non-blank line of text, without colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _log_failure(error: BaseException) -> str | None:
    """Append error's whole traceback (Ray's workers' included) to the driver log file; its
    path, or None when there is no log directory."""
    logs = log_dir()
    if logs is None:
        return None
    path = Path(logs) / DRIVER_LOG
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = redact("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    with path.open("a", encoding="utf-8") as log:
        log.write(f"{stamp}\tERROR fatlib -- the job failed:\n{text}")
    return str(path)


def _show_worker_stdout(data: dict) -> None:
    """Print a batch of one worker's forwarded lines: stdout only, blank lines dropped; Ray's
    progress-bar updates drawn in a terminal and dropped elsewhere."""
    from ray._private import worker
    from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC

    if data.get("is_err") or not str(data.get("pid", "")).isdigit():
        return  # stderr (log records) and the raylet's / autoscaler's own messages
    lines = data.get("lines", [])
    if lines:
        _console.last_output = time.monotonic()
    terminal = sys.stdout.isatty()
    for line in lines:
        if RAY_TQDM_MAGIC in line:
            if terminal:
                worker.process_tqdm(line)
        elif line.strip():
            worker.hide_tqdm()
            print(line, flush=True)
    worker.restore_tqdm()
