"""The real cluster path: a local multi-node Ray started by cluster/local-up.sh, and the three
stages submitted with `ray job submit` exactly as the README says."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fatlib.stages.runtime import free_port
from fatlib.tools.synth import SynthConfig, generate_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def dev_cluster():
    """cluster/local-up.sh: head + one 2-CPU worker node; stopped (only it) afterwards."""
    dashboard = free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           # short: Ray's socket paths under the temp dir must stay within 107 characters
           "FATLIB_RAY_TEMP": f"/tmp/fr-{uuid.uuid4().hex[:6]}",
           "FATLIB_GCS_PORT": str(free_port()), "FATLIB_DASHBOARD_PORT": str(dashboard)}
    env.pop("RAY_ADDRESS", None)
    # No pipes: the Ray daemons it starts would hold them open and the call would never return.
    # One worker node: DDP across nodes is the node-loss drill's; this test is the job path.
    subprocess.run([str(ROOT / "cluster" / "local-up.sh"), "1", "2"], env=env, check=True,
                   timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    group = Path(env["FATLIB_RAY_TEMP"], "local-up.pgid").read_text().strip()
    try:
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dashboard}", "RAY_AUTH_MODE": "token"}
    finally:
        subprocess.run([str(ROOT / "cluster" / "local-down.sh")], env=env, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert not _live_members(group), "local-down.sh left processes running"
        shutil.rmtree(env["FATLIB_RAY_TEMP"], ignore_errors=True)


def _live_members(group: str) -> list[str]:
    """Processes of a process group that are still running (zombies excluded)."""
    listing = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines()
            if line.split()[0] == group and not line.split()[1].startswith("Z")]


def _submit(env, *job_args):
    """`ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python ...`."""
    command = ["ray", "job", "submit", "--working-dir", ".", "--runtime-env",
               "cluster/runtime_env.yaml", "--", "python", *job_args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout
    return done.stdout


def test_preprocess_train_infer_through_ray_job_submit(dev_cluster, tmp_path):
    # 12 curated clips: the fewest 5 folds accept (2 a fold); 3 test clips for the actors.
    generate_dataset(tmp_path / "data", SynthConfig(n_curated=12, n_noisy=0, n_test=3,
                                                    max_seconds=1.5, sample_rate=16000))
    features, run, pred = tmp_path / "features", tmp_path / "run", tmp_path / "pred"
    out = _submit(dev_cluster, "jobs/preprocess.py", "--data", str(tmp_path / "data"),
                  "--out", str(features), "--node-resource", "fatlib_cpu")
    assert "train_curated: 12 converted, 0 failed" in out
    _submit(dev_cluster, "jobs/train.py", "--features", str(features), "--out", str(run),
            "--workers", "2", "--epochs", "1", "--batch-size", "8", "--crop-frames", "32",
            "--no-report")
    assert json.loads((run / "model" / "meta.json").read_text())["classes"]
    out = _submit(dev_cluster, "jobs/infer.py", "--model", str(run / "model"), "--data",
                  str(tmp_path / "data"), "--out", str(pred), "--run-id", "submitted",
                  "--tta", "2")
    assert "run submitted: 3 clips scored" in out
    assert json.loads((pred / "submitted" / "_SUCCESS").read_text())["scored"] == 3
