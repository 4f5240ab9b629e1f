"""What went wrong inside Ray work, found through Ray's wrappers: the root cause a job's one
line shows."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import ray

from fatlib.core.errors import UserError, first_line, strip_colour

# The line of a Python traceback naming the exception: `module.Type: message` after a frame.
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?:: (?P<message>.*))?$")


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
    return RootCause(type(last).__name__, first_line(str(last)), isinstance(last, UserError),
                     tuple(str(n) for n in getattr(last, "__notes__", ())), through_ray)

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
    lines = strip_colour(text).splitlines()
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
