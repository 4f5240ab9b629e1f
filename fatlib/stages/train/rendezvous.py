"""The training workers' process group (DDP rendezvous store, gloo / NCCL connections),
listening on each worker's Ray node address only: 127.0.0.1 on the embedded cluster, the node's
IP on a real one (so the other nodes still reach it)."""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

# Environment variables naming the interface gloo and NCCL listen and connect on.
INTERFACE_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")

# Rank 0's store server: held for as long as its worker process lives, as the process group
# that uses it.
_SERVER: list[dist.TCPStore] = []


@dataclass
class NodeBoundTorchConfig(TorchConfig):
    """TorchConfig (backend, timeout) whose process group listens on Ray node addresses only."""

    @property
    def backend_cls(self) -> type:
        return _NodeBoundBackend


# Ray Train's own torch backend has rank 0 start torch's TCPStore, whose server listens on every
# interface, and leaves gloo the address the host name resolves to: on the embedded cluster,
# where every Ray process listens on 127.0.0.1, those were the only ports open to the network.
class _NodeBoundBackend(_TorchBackend):
    """Ray's torch backend with the process group set up here; its shutdown is Ray's."""

    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        world_size = len(worker_group)
        backend = backend_config.backend or _default_backend(worker_group)
        address, port = worker_group.execute_single(0, serve_store, world_size,
                                                    backend_config.timeout_s)
        # RANK, LOCAL_RANK, WORLD_SIZE, ... in each worker's environment, as Ray's backend
        # sets them.
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([worker_group.execute_single_async(rank, join_process_group, backend, address,
                                                   port, rank, world_size,
                                                   backend_config.timeout_s)
                 for rank in range(world_size)])


def serve_store(world_size: int, timeout_s: float) -> tuple[str, int]:
    """On rank 0: start the TCPStore server listening on this node's Ray address only, at a
    port the system picks; (address, port) for the other ranks."""
    address = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # torch binds every interface when it opens the socket itself: it is handed one that
    # listens here instead.
    listener = socket.create_server((address, 0), family=family)
    port = listener.getsockname()[1]
    server = dist.TCPStore(address, port, world_size, is_master=True,
                           timeout=dt.timedelta(seconds=timeout_s), wait_for_workers=False,
                           master_listen_fd=listener.detach())
    _SERVER[:] = [server]
    return address, port


def join_process_group(backend: str, address: str, port: int, rank: int, world_size: int,
                       timeout_s: float) -> None:
    """On every rank: torch's default process group through the store at address:port, its
    own connections on the interface of this node's Ray address."""
    for name, value in data_plane_variables(ray.util.get_node_ip_address()).items():
        os.environ.setdefault(name, value)  # an interface the user chose is kept
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    if backend == "nccl" and "TORCH_NCCL_BLOCKING_WAIT" not in os.environ:
        # As Ray's backend does: a timed-out NCCL collective fails the worker instead of hanging.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    timeout = dt.timedelta(seconds=timeout_s)
    store = (_SERVER[0] if rank == 0 else
             dist.TCPStore(address, port, world_size, is_master=False, timeout=timeout))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout)


def data_plane_variables(address: str) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME naming the interface that holds address ({}
    when no local interface does, e.g. behind NAT: then torch's choice stands)."""
    import psutil  # a runtime dependency; imported here, where the workers need it

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addresses):
            return dict.fromkeys(INTERFACE_VARIABLES, name)
    return {}


def _default_backend(worker_group) -> str:
    """nccl for GPU workers, gloo otherwise (Ray's choice when TorchConfig names none)."""
    return "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
