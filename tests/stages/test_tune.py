"""Ray Tune search and the LR range test on tiny synthetic features."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fatlib.stages.lr_find.config import SweepSettings
from fatlib.stages.lr_find.sweep import find_lr
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.stages.train.config import TrainConfig
from fatlib.tools.synth import SynthConfig, generate_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def features(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-data")
    generate_dataset(root / "data", SynthConfig(n_curated=60, n_noisy=0, n_test=0,
                                                max_seconds=2.0, sample_rate=16000))
    preprocess(PreprocessConfig(data=str(root / "data"), out=str(root / "features")))
    return str(root / "features")


@pytest.fixture(scope="module")
def experiment(features, tmp_path_factory):
    """jobs/tune.py killed (SIGKILL, whole process group) once a trial has finished, then the
    same command again: it resumes. Returns (out, trial files before the resume, its stdout)."""
    out = tmp_path_factory.mktemp("tune") / "exp"
    command = [sys.executable, "jobs/tune.py", "--features", features, "--out", str(out),
               "--samples", "3", "--max-concurrent", "2", "--epochs", "2", "--batch-size", "16",
               "--crops", "32,64", "--mixups", "0,0.2"]
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
    assert finished and len(finished) < 3, (out.parent / "first-run.log").read_text()[-3000:]
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


def test_trials_finish_and_best_json_names_the_winner(experiment):
    out, _, stdout = experiment
    best = json.loads((out / "best.json").read_text())
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 3 and table.lwlrap.is_monotonic_decreasing
    assert best["lwlrap"] == pytest.approx(table.lwlrap.max())
    assert best["config"]["crop_frames"] in (32, 64)
    assert 3e-4 <= best["config"]["lr"] <= 3e-2
    assert (out / "lwlrap_vs_lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.rglob("events.out.tfevents*")), "TensorBoard event files"
    assert best["command"] in stdout and "--lr" in best["command"]


def test_printed_command_runs(experiment, tmp_path):
    out, _, _ = experiment
    args = shlex.split(json.loads((out / "best.json").read_text())["command"])
    args[args.index("--out") + 1] = str(tmp_path / "best-run")
    args[args.index("--epochs") + 1] = "1"
    done = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((tmp_path / "best-run" / "model" / "meta.json").read_text())
    assert meta["crop_frames"] == int(args[args.index("--crop-frames") + 1])


def test_killed_experiment_resumes_without_rerunning_finished_trials(experiment):
    out, before, _ = experiment
    assert before, "the finished trials had written their runs"
    after = {p: p.stat().st_mtime_ns for p in before if p.exists()}
    assert after == before  # nothing of a finished trial was trained or written again
    trials = {t.name for t in (out / "trials").iterdir()}
    assert len(trials) == 3 and _terminated(out) == trials


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
