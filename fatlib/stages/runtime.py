"""Connecting stages to Ray: the cluster named by RAY_ADDRESS (as under `ray job submit`), or
an embedded local instance when there is none."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import ray
import ray.data
from ray._private import ray_constants

from fatlib.core.errors import UserError
from fatlib.stages import console

GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"  # read by Ray when it starts a local head
LOOPBACK = "127.0.0.1"
_POLL_SECONDS = 5.0
T = TypeVar("T")


class ResourceError(UserError):
    """The cluster cannot hold what a job asks for."""


def ensure_ray() -> None:
    """Join the running Ray (job submission sets RAY_ADDRESS) or start a local one; idempotent."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        _console_to_job()
    else:
        start_local_ray(log_to_driver=True)


def _console_to_job() -> None:
    """Where a job has taken the console: Ray's logs to their file, named in one line."""
    if console.is_quiet():
        print(f"ray: logs in {console.attach()} (--verbose shows them here)", file=sys.stderr,
              flush=True)


def start_local_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> str:
    """Start an embedded Ray instance, listening on loopback only, whose own processes know its
    address; returns it.

    Ray code that runs inside workers and finds "the" cluster by itself (Ray Train's placement
    group cleaner, which frees a Tune trial's workers after ASHA stops it) otherwise reads
    /tmp/ray/ray_current_cluster, left by the last `ray start` on the machine: stale or another
    cluster, so the cleaner dies and the stopped trial's CPUs stay reserved (later trials hang).
    """
    host = LOOPBACK
    port = free_port(host)
    address = f"{host}:{port}"
    saved = os.environ.get(GCS_PORT_VARIABLE)
    os.environ[GCS_PORT_VARIABLE] = str(port)
    try:
        # address="local": a fresh instance, never a stray `ray start` cluster found here;
        # the dashboard on loopback only. Workers print the training table straight to
        # stdout: Train's print patch would send it to stdout and to its log records.
        with _loopback_node():
            ray.init(address="local", num_cpus=num_cpus, dashboard_host=LOOPBACK,
                     _node_ip_address=LOOPBACK, log_to_driver=log_to_driver,
                     runtime_env={"env_vars": {"RAY_ADDRESS": address,
                                               "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}})
    finally:
        if saved is None:
            os.environ.pop(GCS_PORT_VARIABLE, None)
        else:
            os.environ[GCS_PORT_VARIABLE] = saved
    _console_to_job()
    return address


@contextmanager
def _loopback_node() -> Iterator[None]:
    """ray.init that keeps _node_ip_address=127.0.0.1 (all its servers then bind loopback).

    ray.init swaps a loopback node address for the machine's own one, except where Ray runs
    as a single machine (its macOS/Windows default, ENABLE_RAY_CLUSTER off): then the GCS,
    raylet, workers and both agents (the metrics endpoint included) listen on 127.0.0.1 only,
    not on all interfaces. The flag is read at import, so it is switched for the call.
    """
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


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


def unplaced(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> list[dict]:
    """The bundles (each needs one node) that the nodes' resources cannot hold at once, placed
    first-fit, largest first (what Ray's placement would find in all but contrived cases)."""
    free = [dict(n) for n in nodes]
    left = []
    for bundle in sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0),
                                                 sum(b.values())), reverse=True):
        node = next((n for n in free if all(n.get(k, 0.0) + 1e-9 >= v
                                            for k, v in bundle.items())), None)
        if node is None:
            left.append(bundle)
            continue
        for k, v in bundle.items():
            node[k] -= v
    return left


def require_resources(bundles: list[dict[str, float]], what: str,
                      wait_seconds: float | None = None) -> None:
    """Return once the cluster's nodes can hold the bundles; else ResourceError naming the
    shortfall: at once on the embedded local Ray (it never grows), after waiting up to
    wait_seconds (default 0) on a cluster joined by address, where an autoscaler may add nodes."""
    bundles = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    nodes = _alive_nodes()
    missing = unplaced(bundles, nodes)
    if not missing:
        return
    wait = 0.0 if not os.environ.get("RAY_ADDRESS") else float(wait_seconds or 0.0)
    if wait > 0:
        print(f"{what}: waiting up to {wait:.0f} s for the cluster to grow: "
              f"{_shortfall(bundles, missing, nodes)}", flush=True)
        deadline = time.monotonic() + wait
        while missing and time.monotonic() < deadline:
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            nodes = _alive_nodes()
            missing = unplaced(bundles, nodes)
        if not missing:
            return
    raise ResourceError(f"{what} {_shortfall(bundles, missing, nodes)}" +
                        (f" (waited {wait:.0f} s)" if wait > 0 else ""))


def _alive_nodes() -> list[dict[str, float]]:
    """Total resources of each live node."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _shortfall(bundles: list[dict], missing: list[dict], nodes: list[dict]) -> str:
    """'asks for 3 x {CPU: 1} but the cluster has CPU 2 (largest node CPU 2)'."""
    def text(resources: dict) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items())
                         if not k.startswith(("node:", "memory", "object_store_memory")))

    kinds = sorted({tuple(sorted(b.items())) for b in bundles})
    asked = " + ".join(f"{sum(1 for b in bundles if tuple(sorted(b.items())) == k)} x "
                       f"{{{text(dict(k))}}}" for k in kinds)
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            total[k] = total.get(k, 0.0) + v
    needed = sorted({k for b in missing for k in b})
    have = ", ".join(f"{k} {total.get(k, 0.0):g}" for k in needed)
    return (f"asks for {asked} but the cluster has {have} in {len(nodes)} node(s); "
            f"{len(missing)} of {len(bundles)} cannot be placed")


def interruptible(fn: Callable[[], T]) -> T:
    """fn() run in a helper thread so Ctrl-C reaches this one at once.

    Ray Train's fit() installs a SIGINT handler that waits for its controller, which never
    answers while a worker group waits for resources; off the main thread it installs none.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name="fatlib-interruptible", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def cluster_gpus() -> float:
    """GPUs in the cluster (0 without any)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


# A Ray dataset runs with the context it was created with (its own copy, shared by the
# datasets derived from it), not the one current when it runs: settings for one pipeline go on
# its dataset.


def bound_object_store(ds: ray.data.Dataset, nbytes: int) -> ray.data.Dataset:
    """ds, run with at most nbytes of its blocks in the object store at once."""
    options = ds.context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=nbytes)
    return ds


def without_op_reservation(ds: ray.data.Dataset) -> ray.data.Dataset:
    """ds, run with Ray Data's per-operator resource reservation off.

    The reservation splits a small cluster's CPUs between operators: on 2 CPUs only one
    conversion task ran at a time in preprocessing (2 workers no faster than 1).
    """
    ds.context.op_resource_reservation_enabled = False
    return ds
