"""What a job's console shows: the job's own lines, what Ray workers print (the training table)
and, in a terminal, progress bars. Ray's own logs go to a file in the Ray session's log
directory, named in one line; `--verbose` shows them on the console as Ray prints them.

A failure of Ray work (a task, an actor, a Ray Data UDF, a Ray Train worker) is one line too:
a user error's own message (exit 2), or the root cause and the log file holding the whole
traceback (exit 1)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
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
from fatlib.core.errors import redact
from fatlib.stages.core_lines import CoreLines
from fatlib.stages.failures import root_cause

DRIVER_LOG = "fatlib-driver.log"  # in <session>/logs, beside the logs of Ray's own processes
_RAY_HANDLER = "ray_print_logs"  # the name Ray registers its worker-output printer under
_OUR_HANDLER = "fatlib_print_logs"
_QUIET_SECONDS = 1.0  # worker output reaches the driver through Ray's log monitor, ~0.1-1 s late
_SETTLE_LIMIT_SECONDS = 5.0
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
