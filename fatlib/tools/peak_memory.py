"""Peak resident memory of this process (the driver) and of Ray's worker processes while a stage
runs, and the CPU seconds they spent, sampled from a thread."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import psutil

RAY_WORKER_PREFIX = "ray::"  # Ray names its worker processes ray::IDLE, ray::MapBatches(...), ...


@dataclass
class PeakMemory:
    """Peaks in bytes seen while sampling: the driver's RSS, the largest Ray worker's RSS and
    the largest worker's private memory."""

    driver: int = 0
    worker: int = 0
    # The largest worker's private bytes, RSS less shared pages (Linux's `shared`: file-backed
    # and shared memory, so the object store's /dev/shm pages a worker maps are not counted).
    # USS would say the same but reads /proc/<pid>/smaps: ~0.3 s per torch worker, too slow
    # to sample every 0.2 s. Equal to RSS where psutil has no `shared` field.
    worker_private: int = 0
    workers_seen: int = 0
    cpu_seconds: float = 0.0  # user + system time of the driver and the workers meanwhile


class MemorySampler:
    """Context manager: samples RSS every interval seconds until it exits; `.peak` holds the
    result. Ray workers are this process's descendants titled ray::..., so the Ray it started
    is measured and other Ray instances on the machine are not."""

    def __init__(self, interval: float = 0.2, pid: int | None = None) -> None:
        self.interval = interval
        self.peak = PeakMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fatlib-rss", daemon=True)
        self._seen: set[int] = set()
        self._driver = psutil.Process(pid or os.getpid())  # the driver: this process by default
        # CPU seconds per process: the first reading (0 for a process started meanwhile) and
        # the latest, so a worker that exits keeps what it spent up to its last reading.
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._started = False

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peak.workers_seen = len(self._seen)
        self.peak.cpu_seconds = sum(last - self._cpu_first[pid]
                                    for pid, last in self._cpu_last.items())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        """One reading of the driver and of every Ray worker alive now."""
        self.peak.driver = max(self.peak.driver, self._driver.memory_info().rss)
        self._cpu(self._driver.pid, self._driver.cpu_times())
        for proc in self._driver.children(recursive=True):
            try:
                with proc.oneshot():
                    if not proc.cmdline()[0].startswith(RAY_WORKER_PREFIX):
                        continue
                    info, times = proc.memory_info(), proc.cpu_times()
            except (psutil.Error, IndexError):  # gone between listing and reading
                continue
            self._seen.add(proc.pid)
            self.peak.worker = max(self.peak.worker, info.rss)
            self.peak.worker_private = max(self.peak.worker_private,
                                           info.rss - getattr(info, "shared", 0))
            self._cpu(proc.pid, times)

    def _cpu(self, pid: int, times) -> None:
        """Record a process's user + system seconds."""
        seconds = times.user + times.system
        self._cpu_first.setdefault(pid, seconds if not self._started else 0.0)
        self._cpu_last[pid] = seconds
