"""cluster.yaml passes Ray's own cluster-config schema offline, and says what the jobs rely on."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _validate(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_is_valid_for_ray_up():
    _validate(_load())  # raises on any schema error; no cloud credentials needed


@pytest.mark.parametrize("break_it", [
    lambda c: c.update(availble_node_types=c.pop("available_node_types")),
    lambda c: c["available_node_types"]["cpu_worker"].update(max_workers="eight"),
    lambda c: c.update(head_node_type="nope"),
    lambda c: c["provider"].update(type="nocloud"),
], ids=["typo", "wrong-type", "unknown-head", "unknown-provider"])
def test_the_schema_check_catches_mistakes(break_it):
    config = _load()
    break_it(config)
    with pytest.raises(Exception):  # noqa: B017 - Ray raises several types for these
        _validate(config)


def test_node_types_carry_what_the_jobs_use():
    config = _load()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head.get("resources", {}) and head["resources"].get("CPU") == 0
    assert types["cpu_worker"]["resources"]["fatlib_cpu"] > 0  # preprocess --node-resource
    assert types["gpu_worker"]["resources"]["fatlib_gpu"] > 0
    for name, node in types.items():
        if name != config["head_node_type"]:
            assert 0 <= node["min_workers"] <= node["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # never a public dashboard port
    assert any("constraints.txt" in cmd for cmd in config["setup_commands"])
