"""Surviving node loss on a simulated multi-node cluster (each drill in its own process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    # Opt-in (FATLIB_CLUSTER_DRILLS=1): they start extra Ray clusters beside the suite's and were
    # not yet reliable inside the full run on a 2-core machine (see the closing note).
    pytest.mark.skipif(os.environ.get("FATLIB_CLUSTER_DRILLS") != "1",
                       reason="cluster drills are opt-in: FATLIB_CLUSTER_DRILLS=1"),
]


def _drill(scenario: str, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "node_loss.py"), scenario,
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_preprocess_converts_every_clip_exactly_once_after_losing_a_node(tmp_path):
    seen = _drill("preprocess", tmp_path)
    assert seen["removed"], "the node was removed mid-conversion"
    assert (seen["converted"], seen["failed"]) == (80, 0)
    assert seen["rows"] == seen["unique"] == 80 and seen["expected"]


def test_training_continues_from_its_checkpoint_after_losing_a_node(tmp_path):
    seen = _drill("train", tmp_path)
    assert seen["removed"], "the node was removed mid-training"
    assert seen["train_workers_started"] > 2  # the worker group was started again
    assert seen["epochs"] == [1, 2, 3]  # resumed, not restarted from zero
    assert seen["artifact"]
