"""Directory locks: a second job on a directory is refused in one line, a finished or killed job
leaves none, a crashed job's S3 lock is taken over, an unusable --out is named up front."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import boto3
import pytest

from fatlib.io.locks import LOCK_FILE, DirectoryInUse, DirectoryUnusable, hold

REPO = Path(__file__).resolve().parents[2]


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.bad_input
def test_a_second_job_on_a_local_directory_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    with hold(str(run), "train"):
        with pytest.raises(DirectoryInUse) as e, hold(str(run), "infer"):
            pass
        assert sorted(os.listdir(run)) == [LOCK_FILE]  # the refused job wrote nothing
    message = _one_line(e)
    assert message.startswith(f"{run} is in use by train (pid {os.getpid()} on host "
                              f"{socket.gethostname()} since ")
    assert message.endswith("; wait for it or choose another --out")


def test_the_lock_goes_with_the_block_and_so_does_a_directory_left_empty(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    with hold(str(kept), "preprocess"):
        owner = json.loads((kept / LOCK_FILE).read_text())
        assert owner["job"] == "preprocess" and owner["pid"] == os.getpid()
    assert kept.is_dir() and not (kept / LOCK_FILE).exists()
    with hold(str(kept), "train"):  # free again
        pass
    fresh = tmp_path / "a" / "b"
    with hold(str(fresh), "train"):
        assert fresh.is_dir()
    assert not (tmp_path / "a").exists()  # created for the job, left empty: removed
    with hold(str(fresh), "train"):
        (fresh / "model").write_text("weights")
    assert (fresh / "model").read_text() == "weights" and os.listdir(fresh) == ["model"]


def test_a_killed_holder_leaves_the_directory_free(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from fatlib.io.locks import hold\n"
            f"with hold({str(run)!r}, 'train'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUse, match=f"pid {holder.pid} "):
            with hold(str(run), "train"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (run / LOCK_FILE).exists()  # kill -9 left the file, but not the lock
    with hold(str(run), "train"):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


@pytest.mark.bad_input
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_out_that_is_or_is_under_a_file_is_named_up_front(tmp_path, where):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    out = file if where == "file" else file / "runs" / "r1"
    with pytest.raises(DirectoryUnusable) as e, hold(str(out), "train"):
        pytest.fail("the job ran")
    assert _one_line(e) == (f"{out} cannot be written: {file} is a file, not a directory; "
                            "choose another --out")
    assert file.read_text() == "mine" and os.listdir(tmp_path) == ["notes.txt"]


@contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[None]:
    """A small tmpfs mounted on folder for the block (the test is skipped where that is not
    allowed): a read-only or full filesystem even for root, who writes into any directory."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.bad_input
def test_a_read_only_out_is_named_up_front(tmp_path):
    disk = tmp_path / "disk"
    with _tmpfs(disk, "ro,size=64k"):
        with pytest.raises(DirectoryUnusable) as e, hold(str(disk / "run"), "infer"):
            pytest.fail("the job ran")
        assert _one_line(e) == (f"{disk / 'run'} cannot be written: Read-only file system "
                                f"({disk / 'run'}); choose another --out")
        assert os.listdir(disk) == []


@pytest.mark.bad_input
def test_an_out_on_a_full_disk_is_named_up_front(tmp_path):
    disk = tmp_path / "disk"
    with _tmpfs(disk, "size=64k"):
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError as full:
            assert full.errno == errno.ENOSPC
        finally:
            os.close(filler)
        with pytest.raises(DirectoryUnusable) as e, hold(str(disk / "store"), "preprocess"):
            pytest.fail("the job ran")
        assert _one_line(e) == (f"{disk / 'store'} cannot be written: No space left on device; "
                                "choose another --out")
        assert os.listdir(disk) == ["filler"]


def _lock_object(bucket_uri: str, prefix: str) -> dict | None:
    s3 = boto3.client("s3")
    bucket = bucket_uri.removeprefix("s3://")
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{LOCK_FILE}")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


@pytest.mark.bad_input
def test_a_second_job_on_an_s3_directory_is_refused_and_the_lock_goes_on_exit(s3_bucket):
    run = f"{s3_bucket}/runs/r1"
    with hold(run, "train"):
        assert _lock_object(s3_bucket, "runs/r1")["pid"] == os.getpid()
        with pytest.raises(DirectoryInUse) as e, hold(run, "train"):
            pass
    assert _one_line(e).startswith(f"{run} is in use by train (pid {os.getpid()} on host "
                                   f"{socket.gethostname()} since ")
    assert _lock_object(s3_bucket, "runs/r1") is None
    with hold(run, "infer"):  # free again
        pass


def test_a_crashed_jobs_s3_lock_is_taken_over_and_not_deleted_by_it(s3_bucket, capsys):
    run = f"{s3_bucket}/runs/r1"
    with ExitStack() as crashed, ExitStack() as second:
        crashed.enter_context(hold(run, "train"))  # its heartbeat stops: stale at once (ttl 0)
        second.enter_context(hold(run, "infer", ttl=0))
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and line.endswith(" s ago")
        assert line.startswith(f"{run}: took over the lock of train (pid {os.getpid()} on host "
                               f"{socket.gethostname()} since ")
        assert _lock_object(s3_bucket, "runs/r1")["job"] == "infer"
        crashed.close()  # the job that lost its lock leaves its successor's in place
        assert _lock_object(s3_bucket, "runs/r1")["job"] == "infer"
    assert _lock_object(s3_bucket, "runs/r1") is None


def test_a_job_ended_by_ctrl_c_after_its_grace_leaves_no_s3_lock(s3_bucket):
    # The stage swallows Ctrl-C and goes on, so the job is ended by a forced exit that skips
    # every finally block: the lock must still go, or the next job waits out its TTL.
    job = (
        "import sys, time\n"
        "from fatlib.core import interrupt\n"
        "from fatlib.core.cli import run_job\n"
        "from fatlib.io.locks import hold\n"
        "def stage():\n"
        "    with hold(sys.argv[1], 'train'):\n"
        "        try:\n"
        "            print('ready', flush=True)\n"
        "            time.sleep(30)\n"
        "        except KeyboardInterrupt:\n"
        "            time.sleep(30)\n"
        "interrupt.GRACE_S = 0.5\n"
        "sys.exit(run_job('train', stage, str))\n")
    run = subprocess.Popen([sys.executable, "-c", job, f"{s3_bucket}/runs/r1"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert run.stdout.readline() == "ready\n"
    assert _lock_object(s3_bucket, "runs/r1")["pid"] == run.pid
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=20)
    assert run.returncode == 130 and err.strip().splitlines() == ["train: interrupted"]
    assert _lock_object(s3_bucket, "runs/r1") is None


def test_the_s3_heartbeat_refreshes_the_lock(s3_bucket):
    with hold(f"{s3_bucket}/run", "tune", heartbeat=0.2):
        first = _lock_object(s3_bucket, "run")["heartbeat"]
        deadline = time.monotonic() + 5  # the heartbeat is written to the second
        while _lock_object(s3_bucket, "run")["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _lock_object(s3_bucket, "run")["heartbeat"] > first


@pytest.mark.bad_input
def test_an_s3_out_in_a_missing_bucket_is_named_up_front(s3_endpoint):
    with pytest.raises(DirectoryUnusable) as e, hold("s3://no-such-bucket-fatlib/run", "train"):
        pytest.fail("the job ran")
    assert _one_line(e).startswith("s3://no-such-bucket-fatlib/run cannot be written: ")
    assert "NoSuchBucket" in str(e.value)
