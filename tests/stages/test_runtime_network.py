"""The embedded local Ray listens on loopback only: nothing of it is reachable from the network."""

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


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
