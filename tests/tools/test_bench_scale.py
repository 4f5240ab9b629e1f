"""The scale benchmark's parts: FAT2019-like clip lengths, a split grown in place, peak memory
sampling, and the table's targets computed from the rows."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import soundfile as sf

from fatlib.tools.bench_scale import ScaleBench, ScaleRow, Timed, _plot
from fatlib.tools.peak_memory import MemorySampler, PeakMemory
from fatlib.tools.scale_data import ScaleData, fat_lengths

MB = 2**20


def test_clip_lengths_follow_fat2019s_splits():
    seconds = fat_lengths(25_000, np.random.default_rng(0))
    # FAT2019: 4,970 curated + 19,815 noisy clips, ~90 h; clips of 0.3-57.6 s.
    assert 80 <= seconds.sum() / 3600 <= 100
    assert seconds.min() >= 0.3 and seconds.max() <= 57.6
    assert 0.7 <= np.mean(seconds == 15.0) / 0.8 <= 0.8  # the noisy split's full 15 s cuts


def test_a_split_grows_in_place_and_lists_every_clip(tmp_path):
    data = ScaleData(tmp_path / "d", sample_rate=8000)
    first = data.grow_to(5)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "d" / "test").iterdir()}
    added = data.grow_to(8)
    assert len(first) == 5 and len(added) == 3 and not set(first) & set(added)
    assert data.grow_to(8) == []
    assert {p: p.stat().st_mtime_ns for p in before} == before  # old clips not rewritten
    with open(tmp_path / "d" / "sample_submission.csv") as f:
        assert [row[0] for row in csv.reader(f)][1:] == first + added
    written = sum(sf.info(tmp_path / "d" / "test" / n).duration for n in first + added)
    assert written == pytest.approx(data.seconds, abs=1e-3)


def test_peak_memory_sees_the_driver_grow_and_counts_its_cpu_seconds():
    # A child process as the driver: this test process may host a session Ray already.
    code = ("import sys, time; import numpy as np; block = np.ones(200 * 2**20 // 8); "
            "print('ready', flush=True); sys.stdin.readline(); "
            "end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
            "print('done', flush=True); time.sleep(5)")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with MemorySampler(interval=0.01, pid=child.pid) as sampler:
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"
    finally:
        child.kill()
    assert sampler.peak.driver > 200 * MB  # the 200 MB block it holds
    # 0.3 s burnt, read in 10 ms clock ticks: a tick may fall on either side of each end.
    assert 0.28 <= sampler.peak.cpu_seconds < 5


def _row(clips: int, prep_s: float, driver_mb: int, worker_mb: int, infer_s: float,
         new_s: float) -> ScaleRow:
    memory = PeakMemory(driver=driver_mb * MB, worker=worker_mb * MB,
                        worker_private=worker_mb * MB // 3, workers_seen=2,
                        cpu_seconds=2 * prep_s)
    return ScaleRow(clips=clips, audio_seconds=13.0 * clips, preprocess=Timed(prep_s, memory),
                    store_bytes=clips * 90_000, parts=clips // 64, infer=Timed(infer_s, memory),
                    new_clips=clips // 10, preprocess_new=Timed(prep_s / 10, memory),
                    infer_new=Timed(new_s, memory), ledger_bytes=clips * 30)


def test_targets_compare_the_largest_size_with_the_smallest(tmp_path):
    bench = ScaleBench(cores=2, rows=[_row(1000, 5.2, 600, 1200, 20.0, 8.0),
                                      _row(25000, 130.0, 660, 1200, 400.0, 60.0)])
    text = bench.format()
    # 13,000 audio-s in 5.2 s on 2 cores = 1,250 per core; 325,000 in 130 s = 1,250: 1.00x.
    assert "1250" in text.splitlines()[1]
    header, first = text.splitlines()[:2]  # each stage's worker private MB beside its RSS
    assert "prep wkr MB priv MB" in header and "inf wkr MB priv MB" in header
    assert len(re.findall(r" 1200 +400 ", first)) == 2
    assert "per core at 25000 clips: 1.00x that at 1000 by wall time, 1.00x by CPU" in text
    assert "driver peak RSS: 1.10x" in text
    assert "RSS 1.00x / 1.00x, private 1.00x / 1.00x" in text
    assert "--incremental on +10% new clips: 0.15 of scoring all" in text
    png = tmp_path / "scale.png"
    _plot(bench, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_the_drivers_ray_workers_are_measured():
    parent = subprocess.Popen(["bash", "-c", "(exec -a ray::IDLE sleep 5) & "
                               "(exec -a other sleep 5) & wait"], start_new_session=True)
    try:
        # Both children titled before sampling (a fixed sleep lost that race on a busy machine).
        deadline = time.time() + 10
        while time.time() < deadline and _titles(parent.pid) != {"ray::IDLE", "other"}:
            time.sleep(0.05)
        with MemorySampler(interval=0.01, pid=parent.pid) as sampler:
            pass
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert sampler.peak.workers_seen == 1 and sampler.peak.worker > 0
    # its private pages (stack, heap) without the shared libraries' pages
    assert 0 < sampler.peak.worker_private < sampler.peak.worker


def _titles(pid: int) -> set[str]:
    """The process titles (argv[0]) of pid's children."""
    return {c.cmdline()[0] for c in psutil.Process(pid).children() if c.cmdline()}


def test_default_sizes_fit_the_disk_and_the_time_budget():
    from fatlib.tools.bench_scale import BUDGET_SECONDS, disk_needed, sizes_that_fit, within_budget

    # 16k FAT-length clips: ~17 GB of WAV (measured: 53.8 h), with +10% and the stores ~19 GB.
    assert 18 * 2**30 < disk_needed((1000, 4000, 16000)) < 21 * 2**30
    assert sizes_that_fit(25 * 2**30) == (1000, 4000, 16000)  # 25k needs ~31 GB
    assert sizes_that_fit(40 * 2**30) == (1000, 4000, 16000, 25000)
    assert sizes_that_fit(2**30) == (1000,)  # the smallest always: its run reports the shortfall
    # 1,000 clips took 60 s: 4,000 more are projected at 240 s, 16,000 at 960 s.
    assert within_budget(60, 1000, 60, 4000)
    assert not within_budget(300, 4000, 240, 16000, budget=BUDGET_SECONDS)


def test_sizes_that_cannot_fit_are_refused_before_any_data_is_written(tmp_path, monkeypatch):
    import shutil

    from fatlib.tools import bench_scale

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        100 * 2**30, 99 * 2**30, 2**30))
    with pytest.raises(SystemExit, match=r"sizes up to 25000 clips need ~\d+ GB in .*, which "
                                         r"has 1 GB free \(choose smaller --sizes"):
        bench_scale.bench_scale((1000, 25000), str(tmp_path / "s.png"), workdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
