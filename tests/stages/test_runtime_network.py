"""The embedded local Ray listens on loopback only: nothing of it, training workers included,
is reachable from the network."""

import ipaddress
import os

import psutil
import ray


def test_embedded_ray_listens_on_loopback_only(ray_local):
    @ray.remote(num_cpus=0)
    def ping() -> int:
        return os.getpid()

    worker = ray.get(ping.remote())  # a worker (and its gRPC server) exists, the agents are up
    # The session's processes: GCS, raylet, dashboard, agents, workers all descend from the
    # driver (this process), which listens too (its core worker's gRPC server).
    session = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    assert worker in session
    listening = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in session]
    assert len({pid for pid, _, _ in listening}) >= 4  # driver, GCS, raylet, agents at least
    exposed = [(psutil.Process(pid).name(), ip, port) for pid, ip, port in listening
               if not _loopback(ip)]
    assert exposed == []


def test_training_workers_listen_on_the_ray_node_address_only(ray_local, tmp_path):
    import json

    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import TorchTrainer

    from fatlib.stages.train.rendezvous import NodeBoundTorchConfig

    def loop(config: dict) -> None:
        total = torch.ones(1)
        dist.all_reduce(total)  # the process group (store and gloo pairs) is up and used
        mine = [c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN]
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, {"listening": mine, "sum": float(total[0]),
                                          "gloo": os.environ.get("GLOO_SOCKET_IFNAME")})
        if dist.get_rank() == 0:
            with open(config["out"], "w") as f:
                json.dump(everyone, f)

    out = tmp_path / "workers.json"
    TorchTrainer(loop, train_loop_config={"out": str(out)},
                 torch_config=NodeBoundTorchConfig(),  # what the training driver passes
                 scaling_config=ray.train.ScalingConfig(num_workers=2,
                                                        resources_per_worker={"CPU": 0.5}),
                 run_config=ray.train.RunConfig(storage_path=str(tmp_path), name="net")).fit()
    workers = json.loads(out.read_text())
    assert [w["sum"] for w in workers] == [2.0, 2.0]
    assert all(w["listening"] for w in workers)  # rank 0 the store, both gloo and gRPC
    assert [ip for w in workers for ip in w["listening"] if not _loopback(ip)] == []
    assert {w["gloo"] for w in workers} == {_interface_of("127.0.0.1")}


def test_the_data_plane_takes_the_interface_of_the_node_address():
    from fatlib.stages.train.rendezvous import data_plane_variables

    loopback = _interface_of("127.0.0.1")
    assert data_plane_variables("127.0.0.1") == {"GLOO_SOCKET_IFNAME": loopback,
                                                 "NCCL_SOCKET_IFNAME": loopback}
    assert data_plane_variables("203.0.113.7") == {}  # no such interface: torch's own choice


def _interface_of(ip: str) -> str:
    """The name of the local interface holding ip."""
    return next(name for name, addresses in psutil.net_if_addrs().items()
                if any(a.address == ip for a in addresses))


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
