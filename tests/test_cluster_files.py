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


def test_every_cluster_script_parses_and_the_gpu_ones_refuse_a_missing_site(tmp_path):
    # A device call is minutes of a 15-minute loan: a script that cannot start wastes one.
    for script in sorted((ROOT / "cluster").glob("*.sh")):
        parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{script.name}: {parsed.stderr}"
    for script, name in [("gpu-check.sh", "gpu-check"), ("gpu-sweep.sh", "gpu-sweep")]:
        copy = tmp_path / name
        (copy / "cluster").mkdir(parents=True)
        (copy / "cluster" / script).write_text((ROOT / "cluster" / script).read_text())
        run = subprocess.run(["bash", str(copy / "cluster" / script)], capture_output=True,
                             text=True, env={**os.environ, "OUT": str(tmp_path / "out"),
                                             "RUNS": str(tmp_path / "runs")})
        assert (run.returncode, run.stdout.strip()) == (
            2, f"{name}: .gpu/site.tar.xz missing (see the header)")
