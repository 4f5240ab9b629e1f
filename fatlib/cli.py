"""What every job does around its stage: run it, print its summary, turn user errors into
one line on stderr and exit code 2 (bugs stay tracebacks)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from fatlib.errors import UserError

T = TypeVar("T")


def run_job(name: str, stage: Callable[[], T], summary: Callable[[T], str]) -> int:
    """Exit status of running stage(): 0 and its summary printed, or 2 and the error line."""
    try:
        result = stage()
    except UserError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0
