"""What values a config field accepts, declared once on its option(): bounds, finiteness and
choices, checked as a flag parses (core.cli) and on configs built by code (check_bounds)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from fatlib.core.config import ConfigError


def check_bounds(cfg: Any) -> None:
    """ConfigError naming the first field of the config dataclass cfg whose value is outside
    what its option() declares (bounds, finiteness, choices): the checks its flag makes as it
    parses, for configs built by code (Tune trials, tests, K-fold runs)."""
    for f in dataclasses.fields(cfg):
        meta = f.metadata.get("fatlib")
        if not meta:
            continue
        value = getattr(cfg, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            problem = choice_problem(meta, item) or bound_problem(meta, item)
            if problem:
                name = ("--" + (meta["flag"] or f.name.replace("_", "-"))) if meta["cli"] else \
                    f.name
                raise ConfigError(f"{name} {problem}")


# Each bound: how a value passes it, and how a message states it.
BOUND_TESTS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "minimum": (lambda v, b: v >= b, ">="), "above": (lambda v, b: v > b, ">"),
    "maximum": (lambda v, b: v <= b, "<="), "below": (lambda v, b: v < b, "<")}


def bounds(minimum: float | None, maximum: float | None, above: float | None,
           below: float | None, finite: bool) -> dict:
    """A field's bounds as its metadata holds them."""
    return {"minimum": minimum, "maximum": maximum, "above": above, "below": below,
            "finite": finite}


def bound_problem(bounds: dict, value: Any) -> str | None:
    """Why a number is outside the bounds ('must be > 0, got 0'), or None (also for
    non-numbers: their type is the parser's concern)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and math.isnan(value):
        return "must be a number, got nan"
    if isinstance(value, float) and math.isinf(value) and bounds.get("finite", True):
        return f"must be a finite number, got {value}"
    for key, (passes, sign) in BOUND_TESTS.items():
        bound = bounds.get(key)
        if bound is not None and not passes(value, bound):
            return f"must be {sign} {scalar_text(bound)}, got {scalar_text(value)}"
    return None


def choice_problem(meta: dict, value: Any) -> str | None:
    """Why a value is not among the field's choices, or None (also where it has none)."""
    choices = meta.get("choices")
    if not choices or value is None or value in choices:
        return None
    return f"must be one of {', '.join(map(str, choices))}, got {value!r}"


def scalar_text(value: Any) -> str:
    """bool / int / float / str -> text that parses back to it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
