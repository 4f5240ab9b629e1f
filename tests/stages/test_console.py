"""The job console: the raylet's messages go to Ray's log records, workers' lines still print."""

import logging

from ray._private import worker

from fatlib.stages.console import raylet_messages_to_log

STARTUP = ("WARNING: 8 PYTHON worker processes have been started on node: 42b4 with address: "
           "127.0.0.1, which is 4x the maximum expected startup concurrency (2).")


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
    out = capsys.readouterr().out
    assert "PYTHON worker processes" not in out and "epoch 1" in out
    assert [r.getMessage() for r in caplog.records] == [f"raylet: {STARTUP}"]
