"""Shared fixtures: small synthetic audio written to temporary files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 44100


# The suite starts ~20 Ray Train runs, most in one Ray per xdist worker, each a handful of actors
# and read tasks. Ray's defaults suit a long job on a cluster, not that: by default it ends
# idle task workers beyond one per CPU after 1 s, so every run's read tasks start new Python
# processes, and each run's preemption watcher is one more actor process polling for node drains
# that a test Ray never has. Set for the session (subprocess jobs and cluster nodes inherit
# them): -8% CPU on the self-training and K-fold tests (2 cores, 191 -> 175 CPU-s). Metrics
# export, which no test reads, costs each Ray process CPU while it idles (an idle 2-CPU Ray: 6.5
# -> 5.7 CPU-s a minute) and a Train run ~1 CPU-s. Train's controller polls its workers every
# 2 s, so a run ends 1-3 s after its last epoch: polled every 0.25 s, a one-epoch run on
# small_store takes 13.9 s instead of 16.0 (mean of 3 runs each, alone on 2 cores).
RAY_TEST_ENV = {"RAY_num_workers_soft_limit": "6",
                "RAY_idle_worker_killing_time_threshold_ms": "600000",
                "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                "RAY_enable_metrics_collection": "0",
                "RAY_TRAIN_METRICS_ENABLED": "0",
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def pytest_configure(config):
    config.addinivalue_line("markers", "bad_input: a user's bad data, flags or files, and what "
                                       "fatlib does with them (issue 15's bad-input suite)")
    for key, value in RAY_TEST_ENV.items():
        os.environ.setdefault(key, value)


# Modules whose tests share a session fixture too costly to build twice: one xdist work unit.
SHARED_GROUPS = {"tests/stages/train/test_kfold.py": "self_trained",
                 "tests/stages/self_train/test_self_training.py": "self_trained"}
# The units that take longest (pytest --durations, 2 cores) start first, so that make test's
# two workers (pytest-xdist) finish together instead of one waiting on the last long module.
LONGEST_FIRST = ["tests/stages/train/test_train.py", "self_trained",
                 "tests/stages/infer/test_infer.py", "tests/stages/tune/test_tune.py",
                 "tests/stages/train/test_runs.py", "tests/test_job_submission.py",
                 "tests/jobs/test_jobs.py", "tests/stages/test_node_loss.py",
                 "tests/stages/test_console.py", "tests/stages/test_runtime_network.py",
                 "tests/core/test_models.py"]


def _unit(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or the group of modules sharing a fixture."""
    module = nodeid.split("::")[0]
    return SHARED_GROUPS.get(module, module)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: `make test` runs two workers
def pytest_xdist_make_scheduler(config, log):
    """Under -n (xdist's default --dist load), each work unit's tests on one worker, so its
    module fixtures are built once; units handed out longest first. Another --dist is kept."""
    # xdist's own --dist loadgroup renames test ids, which pytest 9 no longer reads.
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # in collection order: LONGEST_FIRST's

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ModuleUnits(config, log)


def pytest_collection_modifyitems(config, items):
    """On xdist workers, the longest work units first (the order units are handed out in)."""
    if hasattr(config, "workerinput"):
        rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_unit(item.nodeid), len(rank)))


def pytest_terminal_summary(terminalreporter):
    """The bad-input suite's size in the run's own output: how many cases were tried."""
    calls = [r for outcome in ("passed", "failed") for r in terminalreporter.stats.get(outcome, [])
             if r.when == "call" and "bad_input" in r.keywords]
    if calls:
        handled = sum(r.passed for r in calls)
        terminalreporter.write_line(f"bad-input suite: {len(calls)} cases tried, {handled} "
                                    "handled as intended")


def signals(sr: int = SR, seconds: float = 3.0) -> dict[str, np.ndarray]:
    """Test signals of the kinds the parity claims cover, float32 mono."""
    rng = np.random.default_rng(0)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    clicks = np.zeros(n)
    clicks[:: sr // 10] = 0.9
    padded = np.zeros(n)
    padded[n // 4 : n // 2] = rng.standard_normal(n // 2 - n // 4) * 0.05
    chirp = np.sin(2 * np.pi * np.cumsum(np.geomspace(50, 0.45 * sr, n)) / sr)
    return {
        "noise": (rng.standard_normal(n) * 0.1).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "chirp": (0.3 * chirp).astype(np.float32),
        "clicks": clicks.astype(np.float32),
        "silence_padded": padded.astype(np.float32),
        "short": (rng.standard_normal(int(0.4 * sr)) * 0.2).astype(np.float32),
    }


def downgrade_store(store: Path, to: Path) -> Path:
    """A copy of the store whose manifest says format 1 (written before clip stats existed),
    which fatlib refuses: only the manifest is read before the refusal."""
    import json
    import shutil

    shutil.copytree(store, to)
    manifest = json.loads((to / "_MANIFEST.json").read_text())
    (to / "_MANIFEST.json").write_text(json.dumps({**manifest, "format": 1}))
    return to


@pytest.fixture
def wav_dir(tmp_path: Path) -> Path:
    """Each test signal as a 16-bit WAV at 44.1 kHz in a temporary folder."""
    for name, y in signals().items():
        sf.write(tmp_path / f"{name}.wav", y, SR, subtype="PCM_16")
    return tmp_path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 reached through the standard AWS environment variables.

    Session-wide and started before Ray, so Ray's workers inherit the same environment.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "fatlib-test-key",
        "AWS_SECRET_ACCESS_KEY": "fatlib-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket; returns its s3:// root."""
    import uuid

    import boto3

    name = f"fatlib-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """One local Ray instance (2 CPUs) for every test that needs Ray."""
    import ray
    import ray.data

    from fatlib.stages.runtime import start_local_ray

    start_local_ray(num_cpus=2, log_to_driver=False)

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


# What small_store holds (its tests count on these numbers).
SMALL_STORE = {"n_curated": 24, "n_noisy": 10, "n_test": 4, "max_seconds": 1.5,
               "sample_rate": 16000}


@pytest.fixture(scope="session")
def small_store(ray_local, tmp_path_factory) -> Path:
    """One synthetic dataset (<root>/data) and its feature store (<root>/features) for the
    tests that train on Ray without needing a model that learns (K-fold, self-training, Tune,
    node loss, resume): 24 curated, 10 noisy and 4 test clips of up to 1.5 s at 16 kHz, made
    once per session. Read-only: a test that changes it works on a copy."""
    from fatlib.stages.preprocess.config import PreprocessConfig
    from fatlib.stages.preprocess.convert import preprocess
    from fatlib.tools.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("small-store")
    generate_dataset(root / "data", SynthConfig(**SMALL_STORE))
    preprocess(PreprocessConfig(data=str(root / "data"), out=str(root / "features")))
    return root

