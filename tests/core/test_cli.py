"""Flags derived from config dataclasses: parsing, defaults in --help, the reverse command,
and the job wrapper's one-line errors."""

import argparse
import runpy
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fatlib.core.bounds import check_bounds, seed_recipe_offences
from fatlib.core.cli import (
    add_flags,
    command,
    field_flags,
    from_args,
    job_parser,
    option,
    run_job,
)
from fatlib.core.config import ConfigError
from fatlib.core.errors import UserError
from fatlib.stages.infer.config import InferConfig
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.tune.config import train_command


def _parse(cls, argv, **kw):
    parser = argparse.ArgumentParser()
    add_flags(parser, cls, **kw)
    return parser, parser.parse_args(argv)


def test_every_train_flag_parses_into_the_config():
    argv = ["--features", "s3://b/f", "--out", "runs/x", "--fold", "2/7", "--mixup", "0.4",
            "--specaugment", "--cpus-per-worker", "1.5", "--normalisation", "global"]
    _, args = _parse(TrainConfig, argv)
    cfg = from_args(TrainConfig, args)
    assert (cfg.fold, cfg.n_folds, cfg.mixup, cfg.specaugment) == (2, 7, 0.4, True)
    assert cfg.cpus_per_worker == 1.5 and cfg.normalisation == "global"
    assert cfg.epochs == TrainConfig(features="", out="").epochs  # untouched: the default


def test_help_shows_every_default():
    parser, _ = _parse(TrainConfig, ["--features", "f", "--out", "o"])
    text = " ".join(parser.format_help().split())
    for shown in ("(default: 0/5)", "(default: 0.003)", "(default: color)", "(default: off)",
                  "(default: the cluster's CPUs shared among workers)", "(required)"):
        assert shown in text


def test_reverse_command_parses_back_to_the_same_config():
    cfg = TrainConfig(features="s3://b/f", out="runs/x", lr=0.0012345, crop_frames=256,
                      mixup=0.2, specaugment=True, epochs=7, fold=2, n_folds=5, noisy="mix",
                      arch="resnet34", normalisation="clip", seed=3)
    args = shlex.split(train_command(cfg))
    assert args[:2] == ["python", "jobs/train.py"]
    parse = runpy.run_path(str(Path(__file__).parents[2] / "jobs" / "train.py"))["parse"]
    parsed, flags = parse(args[2:])
    assert parsed == cfg and flags.self_train is False  # one model, as a trial is
    assert "--cpus-per-worker" not in args  # a trial's CPU share is not part of the recipe


def test_repeated_flags_and_choices():
    argv = ["--model", "m1", "--model", "m2", "--data", "d", "--out", "o",
            "--tta-combine", "max_sigmoid"]
    _, args = _parse(InferConfig, argv)
    cfg = from_args(InferConfig, args)
    assert cfg.models == ("m1", "m2") and cfg.combine == "max_sigmoid"
    assert shlex.split(command("jobs/infer.py", cfg))[2:6] == ["--model", "m1", "--model", "m2"]
    with pytest.raises(SystemExit):
        _parse(InferConfig, [*argv[:-1], "nope"])


@dataclass(frozen=True)
class _Toy:
    names: tuple[str, ...] = option(("a", "b"), "comma-separated names")
    size: int | None = option(None, "a size", default_text="automatic")
    hidden: float = option(1.0, cli=False)


def test_tuples_optionals_and_hidden_fields():
    parser, args = _parse(_Toy, ["--names", "x, y,z", "--size", "4"])
    assert from_args(_Toy, args) == _Toy(names=("x", "y", "z"), size=4)
    assert "--hidden" not in parser.format_help() and "(default: automatic)" in \
        parser.format_help()
    assert command("x.py", _Toy(names=("q",))) == "python x.py --names q"
    with pytest.raises(SystemExit):
        _parse(_Toy, ["--size", "four"])


def test_run_job_prints_user_errors_as_one_line(capsys):
    def fails():
        raise UserError("the store is missing")

    assert run_job("train", fails, str) == 2
    assert capsys.readouterr().err == "train: the store is missing\n"
    assert run_job("train", lambda: 41 + 1, lambda r: f"answer {r}") == 0
    assert capsys.readouterr().out == "answer 42\n"


@pytest.mark.bad_input
def test_a_flag_below_its_minimum_is_one_line_naming_it(capsys):
    parser = job_parser("train a model")
    parser.prog = "train.py"
    add_flags(parser, TrainConfig)
    for argv, message in [(["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
                          (["--epochs", "x"], "argument --epochs: not a valid int: 'x'"),
                          (["--workers", "-1"], "argument --workers: must be >= 1, got -1")]:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--features", "f", "--out", "o", *argv])
        assert exited.value.code == 2
        assert capsys.readouterr().err == f"train: {message} (see --help)\n"


@dataclass(frozen=True)
class _Bounded:
    rate: float = option(0.1, "a rate", above=0, maximum=1)
    share: float = option(0.0, "a share", minimum=0, below=1)
    count: int = option(1, "a count", minimum=1)
    sizes: tuple[int, ...] = option((8,), "sizes", minimum=8)
    wait: float = option(1.0, "seconds", minimum=0, finite=False)
    mode: str = option("a", "a mode", choices=("a", "b"))
    drill: int = option(0, cli=False, minimum=0)


@pytest.mark.bad_input
def test_declared_bounds_are_checked_as_flags_parse_and_on_configs_built_by_code(capsys):
    from fatlib.core.bounds import check_bounds
    from fatlib.core.config import ConfigError

    parser = job_parser("toy")
    parser.prog = "toy.py"
    add_flags(parser, _Bounded)
    for argv, message in [(["--rate", "0"], "--rate: must be > 0, got 0"),
                          (["--rate", "1.5"], "--rate: must be <= 1, got 1.5"),
                          (["--rate", "inf"], "--rate: must be a finite number, got inf"),
                          (["--rate", "nan"], "--rate: must be a number, got nan"),
                          (["--share", "1"], "--share: must be < 1, got 1"),
                          (["--share", "-0.1"], "--share: must be >= 0, got -0.1"),
                          (["--sizes", "8,4"], "--sizes: must be >= 8, got 4"),
                          (["--wait=-inf"], "--wait: must be >= 0, got -inf"),
                          (["--wait", "nan"], "--wait: must be a number, got nan")]:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err == f"toy: argument {message} (see --help)\n"
    assert parser.parse_args(["--rate", "1", "--wait", "inf"]).wait == float("inf")
    # The same declarations hold for a config built by code, flag named (or the field).
    check_bounds(_Bounded(rate=1.0, share=0.5, wait=float("inf")))
    for kwargs, message in [({"rate": 0.0}, "--rate must be > 0, got 0"),
                            ({"sizes": (16, 4)}, "--sizes must be >= 8, got 4"),
                            ({"mode": "c"}, "--mode must be one of a, b, got 'c'"),
                            ({"drill": -1}, "drill must be >= 0, got -1")]:
        with pytest.raises(ConfigError) as refused:
            check_bounds(_Bounded(**kwargs))
        assert str(refused.value) == message


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr: must be a finite number, got inf"),
    (["--lr", "nan"], "--lr: must be a number, got nan"),
    (["--lr", "0"], "--lr: must be > 0, got 0"),
    (["--weight-decay", "-1"], "--weight-decay: must be >= 0, got -1"),
    (["--cpus-per-worker", "-1"], "--cpus-per-worker: must be >= 0.0001, got -1"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker: must be >= 0.0001, got 0"),
    (["--resized-crop", "1"], "--resized-crop: must be < 1, got 1"),
    (["--noisy-smoothing", "1.5"], "--noisy-smoothing: must be <= 1, got 1.5"),
    (["--mixup", "-0.2"], "--mixup: must be >= 0, got -0.2"),
    (["--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["--fold", "5/5"], "--fold: --fold k/K needs 0 <= k < K and K >= 2 (got '5/5')"),
])
def test_train_flags_out_of_bounds_are_one_line_at_parse_time(capsys, argv, message):
    parser = job_parser("train a model")
    parser.prog = "train.py"
    add_flags(parser, TrainConfig)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--features", "f", "--out", "o", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"train: argument {message} (see --help)\n"


@pytest.mark.bad_input
def test_train_check_refuses_what_the_flags_refuse():
    from fatlib.core.config import ConfigError

    base = TrainConfig(features="f", out="o")
    base.check()
    for field, value in [("lr", float("inf")), ("weight_decay", -1.0), ("cpus_per_worker", 0.0),
                         ("resized_crop", 1.0), ("noisy_smoothing", 2.0), ("pad", "mirror")]:
        flag = "--" + field.replace("_", "-")
        with pytest.raises(ConfigError, match=f"^{flag} must be "):
            replace(base, **{field: value}).check()
    other = InferConfig(models=("m",), data="d", out="o", cpus_per_worker=0.0)
    with pytest.raises(ConfigError, match="^--cpus-per-worker must be >= 0.0001, got 0$"):
        check_bounds(other)


@dataclass(frozen=True)
class _Listed:
    sizes: tuple[int, ...] = option((8,), "sizes", empty=False)
    where: str = option("x", "where", empty=False)
    models: tuple[str, ...] = option(("m",), "models", flag="model", append=True, empty=False)
    names: tuple[str, ...] = option((), "names: none is all")


@pytest.mark.bad_input
def test_a_field_that_must_not_be_empty_is_refused_as_it_parses_and_when_built(capsys):
    parser = job_parser("toy")
    parser.prog = "toy.py"
    add_flags(parser, _Listed)
    for argv, message in [(["--sizes", ","], "--sizes: must not be empty"),
                          (["--where", ""], "--where: must not be empty")]:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert capsys.readouterr().err == f"toy: argument {message} (see --help)\n"
    assert parser.parse_args(["--names", ","]).names == ()
    for kwargs, message in [({"sizes": ()}, "--sizes must not be empty"),
                            ({"models": ()}, "--model must not be empty")]:
        with pytest.raises(ConfigError) as refused:
            check_bounds(_Listed(**kwargs))
        assert str(refused.value) == message
    with pytest.raises(ConfigError, match="^--model must not be empty$"):
        check_bounds(InferConfig(models=(), data="d", out="o"))


@dataclass(frozen=True)
class _Recipe:
    mixup: float = option(0.0, "mixup alpha", seed_recipe=0.0)
    pad: str = option("silence", "padding", seed_recipe="silence")
    smoothing: float | None = option(None, "soft targets (None: the recipe's)", seed_recipe=0.0)
    shift: int = option(0, cli=False, seed_recipe=0)
    lr: float = option(1.0, "a rate")


def test_the_seed_recipe_offences_are_the_marked_fields_set_otherwise():
    assert seed_recipe_offences(_Recipe()) == []
    assert seed_recipe_offences(_Recipe(smoothing=0.0, lr=5.0)) == []  # unmarked: free
    offending = _Recipe(mixup=0.4, pad="wrap", smoothing=0.2, shift=2)
    assert seed_recipe_offences(offending) == ["--mixup", "--pad wrap", "--smoothing", "shift"]


@pytest.mark.bad_input
def test_the_seed_recipe_names_every_train_flag_it_has_not():
    TrainConfig(features="f", out="o", recipe="seed").check()  # its defaults are the recipe's
    cfg = TrainConfig(features="f", out="o", recipe="seed", mixup=0.2, specaugment=True,
                      pad="wrap", ema=1.0, noisy_smoothing=0.1, sound_mix_gain=3.0)
    with pytest.raises(ConfigError) as refused:
        cfg.check()
    assert str(refused.value) == ("--recipe seed has no --noisy-smoothing, --mixup, "
                                  "--specaugment, --ema, --pad wrap (it is the seed kernel's "
                                  "recipe)")
    replace(cfg, recipe="default").check()


def test_field_flags_show_a_config_as_its_flags_and_help_do():
    flags = field_flags(TrainConfig)
    cfg = TrainConfig(features="f", out="o", fold=2, n_folds=7, specaugment=True, mixup=0.25)
    assert flags["fold"].words(flags["fold"].value(cfg)) == ["--fold", "2/7"]
    assert flags["specaugment"].words(False) == ["--no-specaugment"]
    assert flags["mixup"].words(0.25) == ["--mixup", "0.25"] and flags["noisy"].words(None) == []
    shown = [flags[n].shown(flags[n].value(cfg))
             for n in ("specaugment", "mixup", "cpus_per_worker", "fold")]
    assert shown == ["on", "0.25", "the cluster's CPUs shared among workers", "2/7"]
    assert "n_folds" not in flags and "mel" not in flags  # no flag of their own


@pytest.mark.bad_input
def test_a_job_refuses_a_bad_number_before_ray_starts():
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for argv, line in [(["jobs/train.py", "--features", "f", "--out", "o", "--lr", "inf"],
                        "train: argument --lr: must be a finite number, got inf (see --help)"),
                       (["jobs/report.py", "--run", "r", "--clips", "-3"],
                        "report: argument --clips: must be >= 0, got -3 (see --help)")]:
        started = time.monotonic()
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=root,
                              timeout=60)
        assert done.returncode == 2 and done.stdout == "" and done.stderr == line + "\n"
        assert time.monotonic() - started < 10  # no Ray, no torch: the flags alone
