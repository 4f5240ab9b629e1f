"""The job console: the raylet's messages, Ray's harmless C++ line and Ray's Python warnings go
to Ray's log records, workers' lines still print; a failure of Ray work is one line."""

import logging
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import ray
import ray.data
import ray.train
from ray._private import worker

from fatlib.core.errors import UserError
from fatlib.stages import console
from fatlib.stages.console import raylet_messages_to_log
from fatlib.stages.core_lines import CoreLines
from fatlib.stages.train.driver import StopOnUserError

STARTUP = ("WARNING: 8 PYTHON worker processes have been started on node: 42b4 with address: "
           "127.0.0.1, which is 4x the maximum expected startup concurrency (2).")
# What the driver's core worker writes to stderr on every inference (Ray 2.60).
RESTART_WARNING = (b"[2026-12-04 14:50:30,277 E 15602 15602] core_worker.cc:2465: Actor with "
                   b"class name: 'MapWorker(MapBatches(Scorer))' and ID: 'b575f19d' has "
                   b"constructor arguments in the object store and max_restarts > 0. If the "
                   b"arguments in the object store go out of scope or are lost, the actor "
                   b"restart will fail. See https://github.com/ray-project/ray/issues/53727 for "
                   b"more details.\n")
OTHER_CORE_ERROR = b"[2026-12-04 14:50:31,001 E 15602 15602] core_worker.cc:812: GCS is gone\n"


@pytest.fixture
def job_console(monkeypatch):
    """A fresh console for run_ray_job in this process; Ray's loggers, the warnings' printer
    and Ray Data's context as they were afterwards."""
    monkeypatch.setattr(console, "_console", console._Console())
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "raise_original_map_exception",
                        context.raise_original_map_exception)
    names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
    levels = [(h, h.level) for n in names for h in logging.getLogger(n).handlers]
    yield
    if console._console.pending is not None:
        logging.getLogger("ray").removeHandler(console._console.pending)
    for handler, level in levels:
        handler.setLevel(level)


@ray.remote
def _convert(fname: str) -> None:
    raise UserError(f"{fname}: not a WAV file")


@ray.remote
def _buggy(fname: str) -> None:
    error = ValueError("shapes (2,64) and (3,) do not align")
    error.__notes__ = [f"while scoring 1 clip(s): {fname}"]
    raise error


def _bad_udf(batch):
    raise UserError("train_curated.csv line 3: unknown label 'Bark'")


class _BadActor:
    def __init__(self):
        raise UserError("model/meta.json: digest mismatch")

    def __call__(self, batch):
        return batch


def _failing_loop(config: dict) -> None:
    tempfile.mkstemp(dir=config["attempts"])  # one file per attempt
    raise UserError("--lr 0 would never train")


def test_raylet_messages_go_to_the_log_not_the_console(capsys, caplog, monkeypatch):
    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # undone after
    raylet_messages_to_log()
    raylet_messages_to_log()  # twice (a second job in one process): still one layer
    with caplog.at_level(logging.WARNING, logger="ray"):
        worker.print_to_stdstream({"lines": [STARTUP], "pid": "raylet", "is_err": False},
                                  ignore_prefix=False)
        worker.print_to_stdstream({"lines": ["epoch 1"], "pid": 1234, "is_err": False,
                                   "ip": "127.0.0.1", "task_name": "RayTrainWorker"},
                                  ignore_prefix=True)
    # This line, not any: the session's own raylet may warn meanwhile (after a heavy test).
    out = capsys.readouterr().out
    assert STARTUP not in out and "epoch 1" in out
    logged = [r.getMessage() for r in caplog.records]
    assert logged.count(f"raylet: {STARTUP}") == 1 and all(m.startswith("raylet: ") for m in logged)


def test_rays_actor_restart_line_goes_to_the_log_the_rest_of_stderr_unchanged(capfd, caplog):
    with caplog.at_level(logging.WARNING, logger="ray"):
        lines = CoreLines()
        try:
            os.write(2, b"scoring 50%")  # a progress bar's partial line: shown at once
            os.write(2, b" done\n" + RESTART_WARNING + b"[x] brackets, not Ray's\n")
            os.write(2, OTHER_CORE_ERROR)  # Ray's errors still reach the console
            os.write(2, b"[no line end")
        finally:
            lines.close()
    err = capfd.readouterr().err
    assert err == ("scoring 50% done\n[x] brackets, not Ray's\n" + OTHER_CORE_ERROR.decode() +
                   "[no line end")
    assert [r.getMessage() for r in caplog.records] == [
        f"core worker: {RESTART_WARNING.decode().strip()}"]


def test_rays_python_warnings_go_to_the_log_others_show(monkeypatch, caplog):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest: shown.append(str(message)))
    console.ray_warnings_to_log()
    ray_code = str(Path(ray.__file__).parent / "data" / "_internal" / "actor_pool.py")
    with caplog.at_level(logging.WARNING, logger="ray"), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("the operator only received 1 input(s)", UserWarning, ray_code, 551)
        warnings.warn_explicit("a warning of our own", UserWarning, __file__, 1)
    assert shown == ["a warning of our own"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{ray_code}:551: UserWarning: the operator only received 1 input(s)"]


@pytest.mark.bad_input
def test_a_user_error_in_a_ray_task_is_its_one_line_exit_2(job_console, ray_local, capsys):
    status = console.run_ray_job("preprocess", False, lambda: ray.get(_convert.remote("a.wav")),
                                 str)
    assert status == 2
    assert capsys.readouterr().err.splitlines() == ["preprocess: a.wav: not a WAV file"]


@pytest.mark.bad_input
@pytest.mark.parametrize("where", ["udf", "actor constructor"])
def test_a_user_error_in_ray_data_is_its_one_line_exit_2(where, job_console, ray_local, capsys):
    def stage():
        ds = ray.data.range(2, override_num_blocks=1)
        if where == "udf":
            return ds.map_batches(_bad_udf).take_all()
        return ds.map_batches(_BadActor, compute=ray.data.ActorPoolStrategy(size=1),
                              num_cpus=0.5).take_all()

    expected = {"udf": "train_curated.csv line 3: unknown label 'Bark'",
                "actor constructor": "model/meta.json: digest mismatch"}[where]
    assert console.run_ray_job("infer", False, stage, str) == 2
    assert capsys.readouterr().err.splitlines() == [f"infer: {expected}"]


def test_a_bug_in_ray_work_is_one_line_naming_the_log_exit_1(job_console, ray_local, capsys):
    status = console.run_ray_job("infer", False, lambda: ray.get(_buggy.remote("b.wav")), str)
    assert status == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    head, log = lines[0].split(" (full traceback in ")
    assert head == ("infer: ValueError: shapes (2,64) and (3,) do not align "
                    "(while scoring 1 clip(s): b.wav)")
    logged = Path(log.rstrip(")")).read_text()
    assert Path(log.rstrip(")")).name == console.DRIVER_LOG
    assert "Traceback" in logged and "in _buggy" in logged
    assert "ValueError: shapes (2,64) and (3,) do not align" in logged


def test_verbose_shows_a_bug_in_ray_work_as_a_traceback(job_console, ray_local, capsys):
    with pytest.raises(ray.exceptions.RayTaskError, match="do not align"):
        console.run_ray_job("infer", True, lambda: ray.get(_buggy.remote("b.wav")), str)
    status = console.run_ray_job("infer", True, lambda: ray.get(_convert.remote("c.wav")), str)
    assert status == 2  # a user error stays one line
    assert capsys.readouterr().err.splitlines() == ["infer: c.wav: not a WAV file"]


@pytest.mark.bad_input
def test_a_user_error_in_a_training_worker_ends_the_run_at_once(job_console, ray_local,
                                                                tmp_path, capsys):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    trainer = ray.train.torch.TorchTrainer(
        _failing_loop, train_loop_config={"attempts": str(attempts)},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="stop", storage_path=str(tmp_path / "runs"),
                                       failure_config=ray.train.FailureConfig(max_failures=2),
                                       callbacks=[StopOnUserError()]))
    assert console.run_ray_job("train", False, trainer.fit, str) == 2
    assert capsys.readouterr().err.splitlines() == ["train: --lr 0 would never train"]
    assert len(list(attempts.iterdir())) == 1  # not retried --max-failures times
