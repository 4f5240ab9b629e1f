"""Flags derived from config dataclasses: parsing, defaults in --help, the reverse command,
and the job wrapper's one-line errors."""

import argparse
import shlex
from dataclasses import dataclass

import pytest

from fatlib.core.cli import add_flags, command, from_args, job_parser, option, run_job
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
    _, parsed = _parse(TrainConfig, args[2:])
    assert from_args(TrainConfig, parsed) == cfg
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
