"""Surviving node loss on a simulated multi-node cluster (each drill in its own process)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
DRILL_TIMEOUT_S = 420


def _drill(scenario: str, tmp_path: Path, *args: str) -> dict:
    # A Ray temp root of its own: the simulated cluster records its address there, not in the
    # machine's /tmp/ray/ray_current_cluster (a dead drill cluster must not be found later).
    # Short, since Ray's socket paths under it must stay within 107 characters.
    ray_tmp = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    script = ROOT / "tests" / "stages" / "node_loss.py"
    # A session of its own, so a hung drill is killed with the Ray processes it started.
    drill = subprocess.Popen([sys.executable, str(script), scenario, str(tmp_path), *args],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "RAY_TMPDIR": ray_tmp}, start_new_session=True)
    try:
        # Below pytest's 600 s, so a hang fails here with what the drill said, not in pytest's
        # timeout with nothing (a drill takes ~100 s).
        out, err = drill.communicate(timeout=DRILL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(drill.pid, signal.SIGKILL)
        try:
            err = drill.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired as stuck:  # a process outside the session holds a pipe
            err = (stuck.stderr or b"").decode(errors="replace")
        pytest.fail(f"the {scenario} drill hung for {DRILL_TIMEOUT_S} s; its stderr ends:\n"
                    f"{err[-3000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert drill.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_preprocess_converts_every_clip_exactly_once_after_losing_a_node(tmp_path):
    seen = _drill("preprocess", tmp_path)
    assert seen["removed"], "the node was removed mid-conversion"
    assert (seen["converted"], seen["failed"]) == (80, 0)
    assert seen["rows"] == seen["unique"] == 80 and seen["expected"]


def test_training_continues_from_its_checkpoint_after_losing_a_node(small_store, tmp_path):
    # The session's store (made on the test Ray): the drill's cluster only trains.
    seen = _drill("train", tmp_path, str(small_store / "features"))
    assert seen["removed"], "the node was removed mid-training"
    assert seen["train_workers_started"] > 2  # the worker group was started again
    assert seen["epochs"] == [1, 2, 3]  # resumed, not restarted from zero
    assert seen["artifact"]
