"""Connecting stages to Ray: the cluster named by RAY_ADDRESS (as under `ray job submit`), or
an embedded local instance when there is none."""

from __future__ import annotations

import os

import ray


def ensure_ray() -> None:
    """Join the running Ray (job submission sets RAY_ADDRESS) or start a local one; idempotent."""
    if ray.is_initialized():
        return
    # A local instance gets the dashboard on loopback only; a cluster keeps its own settings.
    local = {} if os.environ.get("RAY_ADDRESS") else {"dashboard_host": "127.0.0.1"}
    ray.init(log_to_driver=True, **local)


def cluster_cpus() -> int:
    """Whole CPUs in the cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
