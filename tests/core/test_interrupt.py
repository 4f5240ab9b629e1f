"""Ctrl-C ends a job with status 130, even when the stage swallows the KeyboardInterrupt."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A job whose stage prints "ready", then meets Ctrl-C in one of four ways. "forks": as Ray
# starting a process with a preexec_fn, Ctrl-C lands in an after-fork hook, where Python can
# only print the exception ("Exception ignored in: ...").
JOB = textwrap.dedent("""
    import os, subprocess, sys, time
    from fatlib.core import interrupt
    from fatlib.core.cli import run_job

    def after_fork():
        print("ready", flush=True)
        time.sleep(30)

    def stage():
        if sys.argv[1] == "forks":
            os.register_at_fork(after_in_parent=after_fork)
            subprocess.Popen(["true"], preexec_fn=lambda: None).wait()
            time.sleep(30)
        try:
            print("ready", flush=True)  # inside the try: Ctrl-C may come at once
            time.sleep(30)
        except KeyboardInterrupt:
            if sys.argv[1] == "raises":
                raise
            # Caught by the stage (as in a library's broad except), which goes on.
        time.sleep(30 if sys.argv[1] == "swallows" else 0)
        return "done"

    interrupt.GRACE_S = 1.0 if sys.argv[1] != "forks" else 20.0
    sys.exit(run_job("job", stage, str))
""")


def ctrl_c(how: str) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds from Ctrl-C to exit) of JOB run with `how`."""
    run = subprocess.Popen([sys.executable, "-c", JOB, how], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert run.stdout.readline() == "ready\n"
    run.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = run.communicate(timeout=20)
    return run.returncode, out, err, time.monotonic() - sent


@pytest.mark.parametrize("how, within", [("raises", 0.9), ("swallows", 4.0), ("finishes", 0.9),
                                         ("forks", 0.9)])
def test_ctrl_c_ends_the_job_with_130_however_the_stage_meets_it(how, within):
    status, out, err, took = ctrl_c(how)
    assert status == 130 and err.strip().splitlines() == ["job: interrupted"]
    assert out == ""  # no summary: a job stopped by Ctrl-C did not finish
    assert took <= within
    if how == "swallows":
        assert took >= 0.9  # the stage had its grace period to unwind


def test_a_job_with_sigint_ignored_keeps_it_ignored():
    from fatlib.core.interrupt import ctrl_c_ends

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_ends("job"):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
