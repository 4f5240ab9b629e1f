"""The embedded local Ray: code running in its workers finds it, whatever else is on the machine."""

import os
from pathlib import Path

import pytest
import ray
import ray.data


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


def test_bundles_are_placed_per_node():
    from fatlib.stages.runtime import unplaced

    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert unplaced([{"CPU": 1.0}] * 6, nodes) == []
    assert unplaced([{"CPU": 1.0}] * 7, nodes) == [{"CPU": 1.0}]
    assert unplaced([{"CPU": 3.0}] * 2, nodes) == [{"CPU": 3.0}]  # 6 CPUs, but not 3 on a node
    assert unplaced([{"CPU": 1.0, "GPU": 1.0}] * 2, nodes) == [{"CPU": 1.0, "GPU": 1.0}]


@pytest.mark.bad_input
def test_a_shortfall_fails_at_once_naming_it_and_a_joined_cluster_waits_first(
        ray_local, monkeypatch, capsys):
    import time

    from fatlib.stages.runtime import ResourceError, require_resources

    require_resources([{"CPU": 1.0}] * 2, "training")  # fits: returns
    with pytest.raises(ResourceError) as short:
        require_resources([{"CPU": 1.0}] * 3, "training (3 workers)", wait_seconds=60)
    assert str(short.value) == ("training (3 workers) asks for 3 x {CPU 1} but the cluster has "
                                "CPU 2 in 1 node(s); 1 of 3 cannot be placed")
    gpus = r"2 x \{CPU 0.5, GPU 1\} but the cluster has CPU 2, GPU 0"
    with pytest.raises(ResourceError, match=gpus):
        require_resources([{"CPU": 0.5, "GPU": 1.0}] * 2, "inference")
    # Joined by address, where an autoscaler may add nodes: says so, waits, then gives up.
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    started = time.monotonic()
    with pytest.raises(ResourceError, match=r"1 of 3 cannot be placed \(waited 1 s\)"):
        require_resources([{"CPU": 1.0}] * 3, "training", wait_seconds=1)
    assert 1 <= time.monotonic() - started < 10
    assert "training: waiting up to 1 s for the cluster to grow" in capsys.readouterr().out


def test_a_bounded_dataset_and_those_made_from_it_run_with_its_object_store_limit(ray_local):
    from fatlib.stages.runtime import bound_object_store

    limits = lambda ds: ds.context.execution_options.resource_limits  # noqa: E731
    current = ray.data.DataContext.get_current().execution_options.resource_limits
    before = current.object_store_memory
    ds = ray.data.range(8)
    scored = bound_object_store(ds, 64 * 2**20).map_batches(lambda batch: batch)
    assert limits(scored).object_store_memory == 64 * 2**20  # what its executor is given
    assert limits(ds).cpu == current.cpu  # only the object store's bound changes
    # Other datasets, and those created later, keep Ray Data's defaults.
    assert current.object_store_memory == before
    assert limits(ray.data.range(8)).object_store_memory == before
    assert scored.count() == 8


def test_op_reservation_goes_off_for_that_dataset_and_those_made_from_it(ray_local):
    from fatlib.stages.runtime import without_op_reservation

    ds = without_op_reservation(ray.data.range(8)).map_batches(lambda batch: batch)
    assert ds.context.op_resource_reservation_enabled is False
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled is True
    assert ray.data.range(8).context.op_resource_reservation_enabled is True
