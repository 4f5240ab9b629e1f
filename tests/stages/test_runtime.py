"""The embedded local Ray: code running in its workers finds it, whatever else is on the machine."""

import os
from pathlib import Path

import pytest
import ray


def test_workers_find_the_embedded_ray_despite_a_stale_cluster_record(ray_local):
    # Ray Train's placement-group cleaner looks the cluster up from inside a worker; a record
    # of a dead `ray start` cluster used to send it there (Tune trials then hung). Plant one.
    record = Path(ray._common.utils.get_ray_address_file(None))
    if record.exists():
        pytest.skip(f"{record} belongs to a Ray cluster on this machine; not touching it")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("127.0.0.1:1")  # nothing listens there

    @ray.remote(num_cpus=0)
    class Marker:
        pass

    @ray.remote(num_cpus=0)
    def alive_actor_names() -> list[str]:
        from ray.util.state import list_actors

        return [a.name for a in list_actors(filters=[("state", "=", "ALIVE")])]

    marker = Marker.options(name="fatlib-marker").remote()
    try:
        ray.get(marker.__ray_ready__.remote())
        assert "fatlib-marker" in ray.get(alive_actor_names.remote(), timeout=120)
    finally:
        record.unlink()
        ray.kill(marker)


def test_embedded_ray_leaves_the_gcs_port_setting_as_it_was(ray_local):
    assert "RAY_GCS_SERVER_PORT" not in os.environ
