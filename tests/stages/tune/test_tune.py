"""Ray Tune search and the LR range test on tiny synthetic features."""

import json
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fatlib.core.config import ConfigError
from fatlib.stages.lr_find.config import SweepSettings
from fatlib.stages.lr_find.sweep import find_lr
from fatlib.stages.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[3]
JOB = ROOT / "jobs" / "tune.py"
parse = runpy.run_path(str(JOB))["parse"]  # jobs/tune.py's flags -> TuneSettings, no Ray
TRAIN_PARSE = runpy.run_path(str(ROOT / "jobs" / "train.py"))["parse"]  # -> TrainConfig
TRIALS = 2  # in the killed and resumed experiment


@pytest.fixture(scope="module")
def features(small_store):
    return str(small_store / "features")


@pytest.fixture(scope="module")
def experiment(features, tmp_path_factory):
    """jobs/tune.py killed (SIGKILL, whole process group) once a trial has finished, then the
    same command again: it resumes. Returns (out, trial files before the resume, its stdout).

    Two trials, one at a time, of one worker (DDP is the training tests' concern): the kill
    comes as the second starts, so next to no trial work is lost and done again."""
    out = tmp_path_factory.mktemp("tune") / "exp"
    command = [sys.executable, "jobs/tune.py", "--features", features, "--out", str(out),
               "--samples", str(TRIALS), "--max-concurrent", "1", "--epochs", "2",
               "--batch-size", "16", "--crops", "32,64", "--mixups", "0,0.2", "--specaugments",
               "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    with open(out.parent / "first-run.log", "w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log,
                                 start_new_session=True)
        deadline = time.time() + 400
        while not _terminated(out) and first.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finished = _terminated(out)
    assert finished and len(finished) < TRIALS, (out.parent / "first-run.log").read_text()[-3000:]
    before = {p: p.stat().st_mtime_ns for t in finished for p in (out / "trials" / t).rglob("*")}
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=500)
    assert again.returncode == 0, again.stderr[-3000:]
    return out, before, again.stdout


def _terminated(out: Path) -> set[str]:
    """Trials Tune's saved experiment state records as finished: what a restore keeps."""
    states = sorted(out.glob("experiment_state-*.json"))
    if not states:
        return set()
    try:
        trials = [json.loads(t[0]) for t in json.loads(states[-1].read_text())["trial_data"]]
    except (ValueError, KeyError):  # caught mid-write
        return set()
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


@pytest.mark.slow
def test_trials_finish_and_best_json_names_the_winner(experiment):
    out, _, stdout = experiment
    best = json.loads((out / "best.json").read_text())
    table = pd.read_csv(out / "results.csv")
    assert len(table) == TRIALS and table.lwlrap.is_monotonic_decreasing
    assert best["lwlrap"] == pytest.approx(table.lwlrap.max())
    assert best["config"]["crop_frames"] in (32, 64)
    assert 3e-4 <= best["config"]["lr"] <= 3e-2
    assert table.specaugment.all() and best["config"]["specaugment"] is True  # --specaugments
    assert (out / "lwlrap_vs_lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.rglob("events.out.tfevents*")), "TensorBoard event files"
    assert best["command"] in stdout and "--lr" in best["command"]


@pytest.mark.slow
def test_printed_command_is_a_valid_train_command(experiment, features):
    # What the printed command could get wrong is its flags and values: jobs/train.py's own
    # parser and bounds take it (training from such a config is the training tests' concern).
    out, _, _ = experiment
    best = json.loads((out / "best.json").read_text())
    args = shlex.split(best["command"])
    assert args[1] == "jobs/train.py"
    cfg, flags = TRAIN_PARSE(args[2:])
    cfg.check()
    assert (cfg.features, cfg.out) == (features, str(out / "best-run"))
    assert cfg.crop_frames == best["config"]["crop_frames"] in (32, 64)
    assert cfg.lr == pytest.approx(best["config"]["lr"])
    assert cfg.specaugment is True  # the trials' --specaugments
    assert cfg.workers == 1 and cfg.epochs == 2 and flags.report
    assert flags.self_train is False  # one model, as the trial was


@pytest.mark.slow
def test_killed_experiment_resumes_without_rerunning_finished_trials(experiment):
    out, before, _ = experiment
    assert before, "the finished trials had written their runs"
    after = {p: p.stat().st_mtime_ns for p in before if p.exists()}
    assert after == before  # nothing of a finished trial was trained or written again
    trials = {t.name for t in (out / "trials").iterdir()}
    assert len(trials) == TRIALS and _terminated(out) == trials


@pytest.mark.slow
def test_find_lr_on_features_writes_its_plot(features, tmp_path):
    cfg = TrainConfig(features=features, out="", batch_size=8, crop_frames=32)
    result = find_lr(cfg, SweepSettings(start=1e-6, end=1.0, steps=12))
    assert 1e-6 <= result.steepest <= 1.0
    plot = tmp_path / "lr.png"
    done = subprocess.run([sys.executable, "jobs/lr_find.py", "--features", features,
                           "--batch-size", "8", "--crop-frames", "32", "--start", "1e-6",
                           "--end", "1", "--steps", "12", "--plot", str(plot)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "suggested LR" in done.stdout and f"plot: {plot}" in done.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "suggested LR" in result.summary()


def _settings(tmp_path, *flags):
    """jobs/tune.py's settings for these flags (a store and an experiment under tmp_path)."""
    settings, _ = parse(["--features", str(tmp_path / "features"), "--out",
                         str(tmp_path / "exp"), *flags])
    return settings


@pytest.mark.parametrize("flags, searched", [((), [False, True]), (("--specaugments",), [True]),
                                             (("--no-specaugments",), [False])])
def test_specaugment_flags_choose_what_trials_sample(tmp_path, flags, searched):
    from fatlib.stages.tune.search import _search_space

    settings = _settings(tmp_path, *flags)
    settings.check()
    assert _search_space(settings)["specaugment"].categories == searched


def test_the_search_table_is_what_trials_sample_and_results_show(tmp_path):
    import numpy as np

    from fatlib.stages.tune.config import (
        SEARCH,
        SEARCHED,
        TuneSettings,
        train_command,
        trial_config,
    )
    from fatlib.stages.tune.search import _search_space, _trials_table

    settings = _settings(tmp_path, "--lr-min", "0.001", "--lr-max", "0.01", "--crops", "32,64",
                         "--mixups", "0,0.4")
    for searched in SEARCH:  # each row names a training field and the search flags it reads
        assert searched.field in TrainConfig.__dataclass_fields__
        assert set(searched.sources) <= set(TuneSettings.__dataclass_fields__)
    space = _search_space(settings)
    assert list(space) == list(SEARCHED) == ["lr", "crop_frames", "mixup", "specaugment"]
    assert (space["lr"].lower, space["lr"].upper) == (0.001, 0.01)
    assert space["crop_frames"].categories == [32, 64] and space["mixup"].categories == [0, 0.4]
    assert list(_trials_table([]).columns) == ["trial_id", *SEARCHED, "lwlrap", "epoch",
                                               "epochs_run", "valid_loss"]
    # Tune hands numpy values: a trial's config holds the fields' own types.
    trial = trial_config(settings.base, {"lr": np.float64(0.002), "crop_frames": np.int64(32),
                                         "mixup": np.float64(0.4), "specaugment": np.bool_(1)})
    assert [type(getattr(trial, f)) for f in SEARCHED] == [float, int, float, bool]
    # The printed command names every searched flag, even at its default.
    default = trial_config(settings.base, {"lr": 3e-3, "crop_frames": 128, "mixup": 0.0,
                                           "specaugment": False})
    args = shlex.split(train_command(default))
    assert {"--lr", "--crop-frames", "--mixup", "--no-specaugment"} <= set(args)
    # One model, as the trial was, where train.py's default would self-train.
    assert args[-1] == "--no-self-train"


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, words", [
    (("--lr-min", "0.1", "--lr-max", "0.001"), "--lr-min 0.1 is above --lr-max 0.001"),
    (("--grace-epochs", "3", "--epochs", "2"), "--grace-epochs 3 is above --epochs 2"),
    (("--crops", "8,64", "--deltas"), "--crop-frames 8"),
    (("--recipe", "seed", "--mixups", "0"), "--specaugment (from --crops, --mixups"),
    (("--recipe", "seed", "--no-specaugments"), "--mixup 0.2"),
])
def test_a_search_no_trial_could_run_is_one_line_before_ray(tmp_path, flags, words):
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, *flags).check()
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("out", ["features", "features/exp"])
def test_an_out_inside_the_store_is_refused(tmp_path, out):
    settings, _ = parse(["--features", str(tmp_path / "features"), "--out", str(tmp_path / out)])
    with pytest.raises(ConfigError, match="--out"):
        settings.check()


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, words", [
    (("--lr-min", "0"), "--lr-min: must be > 0"), (("--lr-max", "nan"), "--lr-max: must be a"),
    (("--lr-min", "inf"), "--lr-min: must be a finite"), (("--samples", "0"), "--samples"),
    (("--max-concurrent", "0"), "--max-concurrent"), (("--crops", "7"), "--crops: must be >= 8"),
    (("--mixups", "0,-0.1"), "--mixups: must be >= 0"), (("--grace-epochs", "0"), "--grace"),
    (("--crops", ","), "--crops: must not be empty"), (("--mixups", ","), "--mixups: must not"),
    (("--out", ""), "--out: must not be empty"),
])
def test_a_bad_search_flag_is_one_line_as_it_parses(tmp_path, capsys, flags, words):
    with pytest.raises(SystemExit) as caught:
        _settings(tmp_path, *flags)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and words in err and err.count("\n") == 1


@pytest.mark.parametrize("flags", [
    ("--lr-min", "0.01", "--lr-max", "0.01"), ("--crops", "8"), ("--samples", "1"),
    ("--grace-epochs", "5", "--epochs", "5"), ("--crops", "9", "--deltas"),
    ("--recipe", "seed", "--mixups", "0", "--no-specaugments"),
])
def test_boundary_search_flags_are_accepted(tmp_path, flags):
    _settings(tmp_path, *flags).check()


@pytest.mark.bad_input
def test_lr_range_upside_down_exits_2_writing_nothing_and_the_fix_is_accepted(tmp_path):
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, str(JOB), "--features", str(tmp_path / "features"),
                           "--out", str(out), "--lr-min", "0.1", "--lr-max", "0.001"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["tune: --lr-min 0.1 is above --lr-max 0.001"]
    assert not out.exists()  # no Tune state that a corrected re-run would restore
    _settings(tmp_path, "--lr-min", "0.001", "--lr-max", "0.1").check()


def _tune_state(exp: Path, reported: bool) -> None:
    """What Tune 2.60 leaves in an experiment: its Tuner, state files, one trial's folder and
    run; the trial has reported an epoch or not."""
    exp.mkdir(parents=True)
    for name in ("tuner.pkl", ".validate_storage_marker",
                 "basic-variant-state-2026-12-04_14-48-54.json"):
        (exp / name).write_bytes(b"{}")
    result = {"trial_id": "d3698_00000", **({"training_iteration": 1, "lwlrap": 0.5}
                                            if reported else {})}
    trial = [json.dumps({"trial_id": "d3698_00000", "status": "RUNNING"}),
             json.dumps({"last_result": result})]
    (exp / "experiment_state-2026-12-04_14-48-54.json").write_text(
        json.dumps({"trial_data": [trial]}))
    (exp / "_trial_d3698_00000_0_crop_frames=32,lr=0.0056_2026-12-04_14-48-54").mkdir()
    (exp / "trials" / "d3698_00000").mkdir(parents=True)
    (exp / "trials" / "d3698_00000" / "run_config.json").write_text("{}")
    (exp / "notes.txt").write_text("the user's")


@pytest.mark.bad_input
def test_a_search_that_failed_before_any_trial_reported_does_not_block_the_next(tmp_path):
    from fatlib.stages.tune.search import _resumable

    exp = tmp_path / "exp"
    _tune_state(exp, reported=False)
    assert not _resumable(str(exp))  # a fresh search with the new flags, not a restore
    assert sorted(p.name for p in exp.iterdir()) == ["notes.txt", "trials"]
    assert not list((exp / "trials").iterdir())
    (tmp_path / "first").mkdir()  # what a failure in the sampler leaves (Tune's Tuner only)
    (tmp_path / "first" / "tuner.pkl").write_bytes(b"")
    assert not _resumable(str(tmp_path / "first")) and not list((tmp_path / "first").iterdir())


def test_a_search_with_a_reported_epoch_is_resumed_untouched(tmp_path):
    from fatlib.stages.tune.search import _resumable

    exp = tmp_path / "exp"
    _tune_state(exp, reported=True)
    before = sorted(p.relative_to(exp) for p in exp.rglob("*"))
    assert _resumable(str(exp))
    assert sorted(p.relative_to(exp) for p in exp.rglob("*")) == before


def test_trials_share_the_cpus_of_the_trials_that_can_run(tmp_path, monkeypatch):
    from fatlib.stages import runtime
    from fatlib.stages.tune import search

    monkeypatch.setattr(runtime, "cluster_cpus", lambda: 2)
    monkeypatch.setattr(search, "cluster_cpus", lambda: 2)
    # 2 trials never run 8 at once: each takes half the cluster, not an eighth.
    assert search._trial_cpus(_settings(tmp_path, "--samples", "2", "--max-concurrent", "8")) \
        == 0.98
    with pytest.raises(runtime.ResourceError, match="--max-concurrent 500"):
        search._trial_cpus(_settings(tmp_path, "--samples", "500", "--max-concurrent", "500"))
