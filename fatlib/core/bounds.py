"""What values a config field accepts, declared once on its option(): bounds, finiteness,
emptiness and choices, checked as a flag parses (core.cli) and on configs built by code
(check_bounds); and what the seed recipe requires of it (seed_recipe_offences)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from fatlib.core.config import ConfigError


def check_bounds(cfg: Any) -> None:
    """ConfigError naming the first field of the config dataclass cfg whose value is outside
    what its option() declares (bounds, finiteness, emptiness, choices): the checks its flag
    makes as it parses, for configs built by code (Tune trials, tests, K-fold runs)."""
    for f, meta in _declared(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, tuple) else (value,)
        problems = [empty_problem(meta, value),
                    *(choice_problem(meta, v) or bound_problem(meta, v) for v in items)]
        problem = next((p for p in problems if p), None)
        if problem:
            raise ConfigError(f"{_name(f, meta)} {problem}")


def seed_recipe_offences(cfg: Any) -> list[str]:
    """What the config dataclass cfg sets that the seed recipe forbids, as its flags say it
    ('--mixup', '--pad wrap'): each field marked option(seed_recipe=v) holding neither v nor
    None (the recipe's own default), in declaration order."""
    offences = []
    for f, meta in _declared(cfg):
        required, value = meta.get("seed_recipe"), getattr(cfg, f.name)
        if required is None or value is None or value == required:
            continue
        # A recipe that requires 0 / off has none of the thing: the flag alone says it.
        offences.append(_name(f, meta) + (f" {scalar_text(value)}" if required else ""))
    return offences


def seed_recipe_values(cls: Any) -> dict[str, Any]:
    """{field: value} the seed recipe requires, for each field of the config dataclass cls
    marked option(seed_recipe=v): everything the seed kernel did not have, switched off."""
    return {f.name: meta["seed_recipe"] for f, meta in _declared(cls)
            if meta.get("seed_recipe") is not None}


# Each bound: how a value passes it, and how a message states it.
BOUND_TESTS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "minimum": (lambda v, b: v >= b, ">="), "above": (lambda v, b: v > b, ">"),
    "maximum": (lambda v, b: v <= b, "<="), "below": (lambda v, b: v < b, "<")}


def bounds(minimum: float | None, maximum: float | None, above: float | None,
           below: float | None, finite: bool, empty: bool = True) -> dict:
    """A field's bounds as its metadata holds them."""
    return {"minimum": minimum, "maximum": maximum, "above": above, "below": below,
            "finite": finite, "empty": empty}


def empty_problem(meta: dict, value: Any) -> str | None:
    """'must not be empty' for an empty text or tuple where the field declares empty=False."""
    if meta.get("empty", True) or not isinstance(value, (str, tuple)) or len(value):
        return None
    return "must not be empty"


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


def scalar(kind: Any, text: str) -> Any:
    """Text -> bool / int / float / str (argparse's error where it is none)."""
    if kind is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"not a yes/no value: {text!r}")
        return lowered in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None


def scalar_text(value: Any) -> str:
    """bool / int / float / str -> text that parses back to it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _declared(cfg: Any) -> list[tuple[dataclasses.Field, dict]]:
    """(field, its option() metadata) of each declared field of the config dataclass cfg."""
    return [(f, f.metadata["fatlib"]) for f in dataclasses.fields(cfg) if f.metadata.get("fatlib")]


def _name(f: dataclasses.Field, meta: dict) -> str:
    """How a message names a field: its flag, or its name where it has none (cli=False)."""
    return "--" + (meta.get("flag") or f.name.replace("_", "-")) if meta.get("cli", True) \
        else f.name
