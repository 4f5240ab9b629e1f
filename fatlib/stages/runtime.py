"""Connecting stages to Ray: the cluster named by RAY_ADDRESS (as under `ray job submit`), or
an embedded local instance when there is none."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import ray.data

GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"  # read by Ray when it starts a local head


def ensure_ray() -> None:
    """Join the running Ray (job submission sets RAY_ADDRESS) or start a local one; idempotent."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    start_local_ray(log_to_driver=True)


def start_local_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> str:
    """Start an embedded Ray instance whose own processes know its address; returns it.

    Ray code that runs inside workers and finds "the" cluster by itself (Ray Train's placement
    group cleaner, which frees a Tune trial's workers after ASHA stops it) otherwise reads
    /tmp/ray/ray_current_cluster, left by the last `ray start` on the machine: stale or another
    cluster, so the cleaner dies and the stopped trial's CPUs stay reserved (later trials hang).
    """
    host = ray.util.get_node_ip_address()
    port = free_port(host)
    address = f"{host}:{port}"
    saved = os.environ.get(GCS_PORT_VARIABLE)
    os.environ[GCS_PORT_VARIABLE] = str(port)
    try:
        # address="local": a fresh instance, never a stray `ray start` cluster found here;
        # the dashboard on loopback only.
        ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1",
                 log_to_driver=log_to_driver,
                 runtime_env={"env_vars": {"RAY_ADDRESS": address}})
    finally:
        if saved is None:
            os.environ.pop(GCS_PORT_VARIABLE, None)
        else:
            os.environ[GCS_PORT_VARIABLE] = saved
    return address


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cluster_cpus() -> int:
    """Whole CPUs in the cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def shared_cpus(concurrent: int, workers: int) -> float:
    """CPUs per training worker when `concurrent` runs of `workers` workers share the cluster:
    a little under an equal share, since each run's driver task holds 0.01 CPU and whole-CPU
    workers would never fit beside them."""
    return round(0.98 * cluster_cpus() / (concurrent * workers), 2)


def cluster_gpus() -> float:
    """GPUs in the cluster (0 without any)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


@contextmanager
def without_op_reservation() -> Iterator[None]:
    """Ray Data with its per-operator resource reservation off, for the pipelines run inside.

    The reservation splits a small cluster's CPUs between operators: on 2 CPUs only one
    conversion task ran at a time in preprocessing (2 workers no faster than 1), and one
    scoring actor sat idle in inference.
    """
    context = ray.data.DataContext.get_current()
    saved = context.op_resource_reservation_enabled
    context.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        context.op_resource_reservation_enabled = saved
