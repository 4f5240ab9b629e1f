"""The shipped schedule: the submit command it builds, and units that cannot overlap runs."""

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_scheduled_inference_submits_an_incremental_infer_job():
    env = {**os.environ, "FATLIB_MODELS": "s3://b/f0/model s3://b/f1/model",
           "FATLIB_INCOMING": "s3://b/incoming", "FATLIB_PREDICTIONS": "s3://b/pred",
           "FATLIB_TTA": "8"}
    out = subprocess.run([str(ROOT / "cluster" / "infer-scheduled.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["ray", "job", "submit"]
    job = out[out.index("--") + 1:]
    assert job[:2] == ["python", "jobs/infer.py"] and (ROOT / job[1]).exists()
    assert job.count("--model") == 2 and "--incremental" in job
    assert job[job.index("--data") + 1] == "s3://b/incoming"
    assert job[job.index("--tta") + 1] == "8"


def test_scheduled_inference_names_a_missing_setting():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FATLIB_")}
    done = subprocess.run([str(ROOT / "cluster" / "infer-scheduled.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "FATLIB_MODELS" in done.stderr


def test_units_and_runtime_env():
    service = (ROOT / "cluster" / "fatlib-infer.service").read_text()
    timer = (ROOT / "cluster" / "fatlib-infer.timer").read_text()
    assert "Type=oneshot" in service and "infer-scheduled.sh" in service
    assert "OnUnitActiveSec=" in timer
    assert "flock -n" in (ROOT / "cluster" / "crontab").read_text()
    runtime_env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    assert {".venv/", "demo/"} <= set(runtime_env["excludes"])
