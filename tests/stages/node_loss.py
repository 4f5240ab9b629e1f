"""Node-loss drills on a simulated multi-node cluster (ray.cluster_utils.Cluster).

Run in its own process by tests/stages/test_node_loss.py (a process joins one Ray cluster only):
`python tests/stages/node_loss.py <scenario> <tmp dir> [<feature store>]` prints one JSON line
of observations (the train scenario trains on the feature store).
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import ray
from ray.cluster_utils import Cluster

from fatlib.io.feature_store import FeatureStore
from fatlib.stages.preprocess.config import PreprocessConfig
from fatlib.stages.preprocess.convert import preprocess
from fatlib.stages.runtime import free_port
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.train.driver import train
from fatlib.tools.synth import SynthConfig, generate_dataset

CLUSTERS: list[Cluster] = []


def _cluster(n_workers: int = 2, head_cpus: int = 0) -> tuple[Cluster, list]:
    """A head (with no CPU unless asked) and 1-CPU worker nodes, so work must spread over
    them; the worker nodes are the ones a drill removes."""
    # Its own dashboard port: the drills read actor state through the dashboard, and another
    # Ray on this machine (the test suite's) may hold the default 8265.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": head_cpus, "dashboard_port": free_port()})
    CLUSTERS.append(cluster)
    workers = [cluster.add_node(num_cpus=1) for _ in range(n_workers)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return cluster, workers


def _when(condition, action, timeout: float = 300.0) -> dict:
    """Run action() in a thread as soon as condition() holds; report when it happened."""
    seen: dict = {}

    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                seen["at"] = time.time()
                action()
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def preprocess_loses_a_node(tmp: Path) -> dict:
    """A worker node dies while clips are being converted; the split still lands whole."""
    cluster, workers = _cluster()
    generate_dataset(tmp / "data", SynthConfig(n_curated=80, n_noisy=0, n_test=0,
                                               min_seconds=2.0, max_seconds=6.0))
    out = tmp / "features"
    staging = out / "_staging"
    removal = _when(lambda: staging.exists() and any(staging.rglob("part-*.parquet")),
                    lambda: cluster.remove_node(workers[0]))
    result = preprocess(PreprocessConfig(data=str(tmp / "data"), out=str(out), batch_size=2,
                                         workers=2))
    names = FeatureStore.open(str(out)).table("train_curated").column("fname").to_pylist()
    expected = pd.read_csv(tmp / "data" / "train_curated.csv").fname.tolist()
    return {"removed": "at" in removal, "converted": result.splits[0].converted,
            "failed": result.splits[0].failed, "rows": len(names),
            "unique": len(set(names)), "expected": sorted(expected) == sorted(names)}


def train_loses_a_node(tmp: Path, features: str) -> dict:
    """A node running a training worker dies after the first checkpoint; the group restarts
    on the remaining nodes: the head's CPU stands by (Ray cannot add nodes from a watcher
    thread), one node fewer to start than a spare worker node."""
    cluster, workers = _cluster(n_workers=2, head_cpus=1)
    run = tmp / "run"

    def kill_a_training_node() -> None:
        from ray.util.state import list_actors

        busy = {a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"),
                                                        ("state", "=", "ALIVE")])}
        victim = next(node for node in workers if node.node_id in busy)
        cluster.remove_node(victim)

    removal = _when(lambda: run.exists() and any(run.glob("checkpoint_*")), kill_a_training_node)
    result = train(TrainConfig(features=features, out=str(run), workers=2, epochs=3,
                               batch_size=8, crop_frames=32, valid_crops=1))
    from ray.util.state import list_actors

    started = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000)
    return {"removed": "at" in removal, "epochs": [h["epoch"] for h in result.history],
            "artifact": (run / "model" / "meta.json").exists(),
            "train_workers_started": len(started)}


if __name__ == "__main__":
    import os

    scenario, folder, *store = sys.argv[1], Path(sys.argv[2]), *sys.argv[3:]
    print(json.dumps({"preprocess": preprocess_loses_a_node,
                      "train": train_loses_a_node}[scenario](folder, *store)), flush=True)
    ray.shutdown()
    # Ray's exit hooks trip over the nodes the drill removed (AttributeError at exit): stop
    # the remaining nodes here and leave without running them.
    try:
        CLUSTERS[0].shutdown()
    except Exception as e:  # noqa: BLE001 - best effort; the result is already printed
        print(f"cluster shutdown: {e}", file=sys.stderr)
    os._exit(0)
