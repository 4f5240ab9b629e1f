"""Connecting stages to Ray: the cluster named by RAY_ADDRESS (as under `ray job submit`), or
an embedded local instance when there is none."""

from __future__ import annotations

import os

import ray


def ensure_ray() -> None:
    """Join the running Ray (job submission sets RAY_ADDRESS) or start a local one; idempotent."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    # No address: always a fresh embedded instance (never a stray `ray start` cluster found on
    # this machine), its dashboard on loopback only.
    ray.init(address="local", dashboard_host="127.0.0.1", log_to_driver=True)


def cluster_cpus() -> int:
    """Whole CPUs in the cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
