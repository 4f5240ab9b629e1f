"""Command lines from config dataclasses, in one place: every job's flags (with help and
defaults), the reverse `python jobs/x.py ...` command, and the wrapper that turns user errors
into one line and exit code 2.

A config field becomes a flag `--field-name` typed by its annotation; `option()` adds its help
text and, where needed, another flag name, choices, bounds, the seed recipe's value, or a parser
for values that span two fields (`--fold k/K`); `field_flags` hands that form to whatever shows
settings. Nothing here imports torch or Ray, so `--help` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fatlib.core.bounds import (
    BOUND_TESTS,
    bound_problem,
    bounds,
    empty_problem,
    scalar,
    scalar_text,
)
from fatlib.core.errors import UserError, redact
from fatlib.core.interrupt import ctrl_c_ends

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, flag: str | None = None,
           choices: Iterable | None = None, parse: Callable[[str], Any] | None = None,
           render: Callable[[Any], str] | None = None, sets: tuple[str, ...] | None = None,
           default_text: str | None = None, append: bool = False, metavar: str | None = None,
           minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, finite: bool = True,
           empty: bool = True, seed_recipe: Any = None, cli: bool = True,
           default_factory: Any = _MISSING) -> Any:
    """A dataclass field that knows its command-line flag.

    flag: name without dashes (default: the field name with '-'); parse / render: text <-> value
    for types argparse cannot guess; sets: the fields one flag fills (parse returns a tuple);
    default_text: shown instead of a None default; append: the flag repeats into a tuple;
    minimum / maximum: the smallest / largest value accepted, above / below: the same, the bound
    itself excluded; finite=False: a float may be inf (never nan); empty=False: an empty text
    or list is refused; seed_recipe: the value `--recipe seed` requires (None: any; a None
    value is the recipe's own default, so it passes); cli=False: no flag (set by code, e.g.
    fault drills). The flag checks the bounds as it parses, `check_bounds` on a config built by
    code, `seed_recipe_offences` the seed recipe's marks.
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
            "parse": parse, "render": render, "sets": sets, "default_text": default_text,
            "append": append, "metavar": metavar, "cli": cli, "seed_recipe": seed_recipe,
            **bounds(minimum, maximum, above, below, finite, empty)}
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"fatlib": meta})


def number(kind: type, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None,
           finite: bool = True) -> Callable[[str], Any]:
    """An argparse type for a job's own numeric flag (not a config field), bounded as option()
    bounds a field."""
    declared = bounds(minimum, maximum, above, below, finite)

    def parse(text: str) -> Any:
        value = scalar(kind, text)
        problem = bound_problem(declared, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


class JobParser(argparse.ArgumentParser):
    """A job's argument parser: a bad flag is one line naming it, exit 2 (not the usage)."""

    def error(self, message: str) -> typing.NoReturn:
        """Print `job: message (see --help)` and exit 2."""
        self.exit(2, f"{self.prog.removesuffix('.py')}: {message} (see --help)\n")


def job_parser(description: str | None, *, verbose: bool = False) -> JobParser:
    """The parser every job starts from; verbose: the --verbose flag of jobs that run on Ray."""
    parser = JobParser(description=description)
    if verbose:
        parser.add_argument("--verbose", action="store_true",
                            help="show Ray's own logs on the console (default: off; they go to "
                                 "a file in the Ray session's log directory, named in one line)")
    return parser


def add_flags(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (),
              defaults: dict[str, Any] | None = None) -> None:
    """Add a flag for every command-line field of the config dataclass cls.

    defaults: other defaults for this parser (e.g. tune's one worker per trial).
    """
    defaults = defaults or {}
    for spec in _specs(cls, exclude):
        default = defaults.get(spec.name, spec.default)
        kwargs: dict[str, Any] = {"dest": spec.dest, "help": _help(spec, default)}
        if spec.kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        elif spec.meta["append"]:
            kwargs.update(action="append", type=spec.parse)
        else:
            kwargs.update(type=spec.parse, metavar=spec.meta["metavar"])
            if spec.meta["choices"]:
                kwargs.update(choices=spec.meta["choices"], metavar=None)
        if spec.required:
            kwargs["required"] = True
        elif spec.kind is not bool:
            kwargs["default"] = default
        parser.add_argument(spec.flag, **kwargs)


def field_flags(cls: type) -> dict[str, FieldFlag]:
    """The command-line form of each flag-bearing field of the config dataclass cls, by field
    name, in declaration order."""
    return {spec.name: spec for spec in _specs(cls, ())}


def from_args(cls: type[T], args: argparse.Namespace, *, exclude: Iterable[str] = (),
              **fixed: Any) -> T:
    """The config dataclass cls filled from parsed flags (and `fixed` values for the rest)."""
    values = dict(fixed)
    for spec in _specs(cls, exclude):
        value = getattr(args, spec.dest)
        if spec.meta["append"] and value is not None:
            value = tuple(value)
        if spec.meta["sets"]:
            values.update(zip(spec.meta["sets"], value, strict=True))
        else:
            values[spec.name] = value
    return cls(**values)


def command(script: str, cfg: Any, *, exclude: Iterable[str] = (),
            always: Iterable[str] = ()) -> str:
    """The `python <script> ...` command line that runs cfg: required flags, the fields in
    `always`, and every other field whose value differs from its default."""
    args = ["python", script]
    always = set(always)
    for spec in _specs(type(cfg), exclude):
        value = spec.value(cfg)
        if spec.required or spec.name in always or value != spec.default:
            args += spec.words(value)
    return shlex.join(args)


def run_job(name: str, stage: Callable[[], T], summary: Callable[[T], str], *,
            explain: Callable[[Exception], tuple[int, str] | None] | None = None) -> int:
    """Exit status of running stage(): 0 and its summary printed, 2 and the error line, or 130
    after Ctrl-C, however the stage met it (see interrupt.ctrl_c_ends).

    explain: (exit status, one line) for a failure, or None to let it propagate (a traceback);
    by default user_error_line. Jobs on Ray pass stages.console.failure_line, which finds the
    user error or root cause inside Ray's wrappers (the core knows nothing of Ray)."""
    try:
        with ctrl_c_ends(name):
            result = stage()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        explained = (explain or user_error_line)(e)
        if explained is None:
            raise
        status, line = explained
        print(redact(f"{name}: {line}"), file=sys.stderr)
        return status
    print(summary(result))
    return 0


def user_error_line(error: Exception) -> tuple[int, str] | None:
    """(2, its message) for a UserError; None for anything else (a bug: its traceback)."""
    return (2, str(error)) if isinstance(error, UserError) else None


@dataclasses.dataclass
class FieldFlag:
    """One config field's command-line form."""

    name: str
    kind: Any  # the element type: bool, int, float, str (or of a tuple)
    is_tuple: bool
    default: Any
    required: bool
    meta: dict

    @property
    def flag(self) -> str:
        """--flag-name."""
        return "--" + (self.meta["flag"] or self.name.replace("_", "-"))

    @property
    def dest(self) -> str:
        """Attribute name on the parsed namespace."""
        return (self.meta["flag"] or self.name).replace("-", "_")

    def value(self, cfg: Any) -> Any:
        """The field's value in the config cfg (a tuple of the fields the flag sets)."""
        names = self.meta["sets"]
        return tuple(getattr(cfg, n) for n in names) if names else getattr(cfg, self.name)

    def words(self, value: Any) -> list[str]:
        """The command-line words that give the field this value ([] for None)."""
        if value is None:
            return []
        if self.kind is bool:
            return [self.flag if value else f"--no-{self.flag[2:]}"]
        if self.meta["append"]:
            return [word for item in value for word in (self.flag, self.text(item))]
        return [self.flag, self.text(value)]

    def shown(self, value: Any) -> str:
        """A value as --help and the run report show it (on / off, the text of a None)."""
        if value is None or value == ():
            return self.meta["default_text"] or ("none" if value is None else "all")
        if self.kind is bool and not self.is_tuple:
            return "on" if value else "off"
        return self.text(value)

    def parse(self, text: str) -> Any:
        """A flag's text -> the field's value."""
        if self.meta["parse"]:
            return self.meta["parse"](text)
        if self.is_tuple and not self.meta["append"]:
            return self._bounded(tuple(self._bounded(scalar(self.kind, part.strip()))
                                       for part in text.split(",") if part.strip()))
        return self._bounded(scalar(self.kind, text))

    def _bounded(self, value: Any) -> Any:
        """value, or an argparse error when it is outside the field's bounds (or empty where
        the field refuses that)."""
        problem = empty_problem(self.meta, value) or bound_problem(self.meta, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    def text(self, value: Any) -> str:
        """A field's value -> its flag's text (inverse of parse)."""
        if self.meta["render"]:
            return self.meta["render"](value)
        if self.is_tuple and not self.meta["append"]:
            return ",".join(scalar_text(v) for v in value)
        return scalar_text(value)


def _specs(cls: type, exclude: Iterable[str]) -> list[FieldFlag]:
    """Command-line specs of the fields of cls, in declaration order."""
    excluded = set(exclude)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    specs = []
    for f in fields.values():
        meta = dict(f.metadata.get("fatlib", {}))
        if f.name in excluded or not meta.get("cli", True):
            continue
        meta.setdefault("help", "")
        for key in ("flag", "choices", "parse", "render", "sets", "default_text", "metavar",
                    "seed_recipe", *BOUND_TESTS):
            meta.setdefault(key, None)
        meta.update({k: meta.get(k, True) for k in ("finite", "empty")})
        meta.setdefault("append", False)
        kind, is_tuple = _kind(hints[f.name], f.name, cls)
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        if meta["sets"]:  # one flag, several fields: its default is their defaults together
            default = tuple(fields[n].default for n in meta["sets"])
        required = f.default is _MISSING and f.default_factory is _MISSING
        specs.append(FieldFlag(f.name, kind, is_tuple, default, required, meta))
    return specs


def _kind(hint: Any, name: str, cls: type) -> tuple[Any, bool]:
    """(element type, is a tuple) of a field's annotation; Optional[X] counts as X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0], True
    if args and typing.get_origin(hint) is not None:  # X | None
        return _kind(args[0], name, cls)
    if hint in (bool, int, float, str):
        return hint, False
    raise TypeError(f"{cls.__name__}.{name}: no command-line form for {hint}; "
                    "declare it with option(cli=False)")


def _help(spec: FieldFlag, default: Any) -> str:
    """The field's help with its default shown."""
    if spec.required:
        return spec.meta["help"] + " (required)"
    return f"{spec.meta['help']} (default: {spec.shown(default)})".replace("%", "%%")
