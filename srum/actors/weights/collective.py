"""The collective transport: a broadcast from the learner to every generator over a torch.distributed group of their
own (NCCL between GPUs: device to device, no host copy; gloo on CPUs). Generators receive into a staging buffer
while they generate (a second concurrency group) and switch to it between batches. The group is a standalone
process group (not torch's default one, which a data-parallel learner uses), so it can be rebuilt whenever
generators come or go (`srum scale`, a replaced actor): a new epoch, the current version sent again.
"""

from __future__ import annotations

import os

from .published import Published

BROADCAST_TIMEOUT_S = 120  # a member that does not take part for this long fails the broadcast


class BroadcastGroup:
    """One epoch of the weight-broadcast group: rank 0 is the learner, ranks 1.. the generators.
    Rendezvous through the TCP store that the learner hosts for the whole run (a key prefix per epoch)."""

    def __init__(self, address: str, epoch: int, rank: int, world: int, backend: str):
        import torch.distributed as dist

        store = dist.PrefixStore(f"srum-weights/{epoch}/", connect_store(address))
        if backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(store, rank, world)
        else:
            self.pg = dist.ProcessGroupGloo(store, rank, world, _timeout())

    def broadcast(self, tensor) -> None:
        """`tensor` from rank 0 into every other rank's, bit for bit in its own dtype (every rank's is of one
        dtype: the learner's buffer and the generators' staging buffers)."""
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([raw_bits(tensor)], opts).wait()


def raw_bits(tensor):
    """The tensor itself, or for a dtype numpy lacks (bf16, which not every gloo build broadcasts) a view of its
    bytes as uint8, which NCCL and gloo both have (not int16: NCCL has no 16-bit integer). Same bytes on the wire."""
    import torch

    from ...models.synced import RAW_BITS

    return tensor.view(torch.uint8) if tensor.dtype in RAW_BITS else tensor


def _timeout():
    import datetime

    return datetime.timedelta(seconds=BROADCAST_TIMEOUT_S)


def host_store() -> tuple[object, object, str]:
    """The learner's rendezvous store for the run (the weight-broadcast epochs and the data-parallel
    learners' group, under their own key prefixes), listening on this node's address only (a TCPStore
    left to itself listens on every interface); returns (store, its socket, "host:port")."""
    import socket

    import ray
    import torch.distributed as dist

    ip = ray.util.get_node_ip_address()
    sock = socket.socket()
    sock.bind((ip, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    store = dist.TCPStore(ip, port, is_master=True, wait_for_workers=False, master_listen_fd=sock.fileno(), timeout=_timeout())
    return store, sock, f"{ip}:{port}"


_stores: dict[str, object] = {}  # per process: one client connection to each host_store


def connect_store(address: str):
    """A client of the store at "host:port" (one per process and address)."""
    import torch.distributed as dist

    host, port = address.rsplit(":", 1)
    if host.startswith("127."):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a loopback-only instance: keep gloo on lo
    if address not in _stores:
        _stores[address] = dist.TCPStore(host, int(port), is_master=False, timeout=_timeout())
    return _stores[address]


class StagingBuffers:
    """A generator's side of the collective transport: two buffers, one in use by the model, the other
    receiving. A receive never writes the buffer in use; a batch waits for the version it was issued
    with (or a newer one) to be whole before switching."""

    def __init__(self, numel: int, device: str, dtype: str = "float32"):
        import threading

        import torch

        from ...models.synced import torch_dtype

        # in the learner's buffer's dtype (the broadcast moves its bytes as they are)
        self.bufs = [torch.zeros(numel, dtype=torch_dtype(dtype), device=device) for _ in range(2)]
        self.version = [(-1, -1), (-1, -1)]  # (learner epoch, version) each buffer holds whole ((-1, -1): none)
        self.in_use = None
        self.cond = threading.Condition()

    def receive(self, group: BroadcastGroup, version: int, epoch: int = 0) -> None:
        with self.cond:
            i = 1 if self.in_use == 0 else 0
            self.version[i] = (-1, -1)
        group.broadcast(self.bufs[i])
        with self.cond:
            self.version[i] = (epoch, version)
            self.cond.notify_all()

    def take(self, version: int, epoch: int = 0, timeout: float = BROADCAST_TIMEOUT_S):
        """The buffer holding `version` of `epoch` or newer, now in use (no receive touches it until the next take)."""
        with self.cond:
            if not self.cond.wait_for(lambda: max(self.version) >= (epoch, version), timeout):
                raise RuntimeError(f"weights of version {version} did not arrive by broadcast in {timeout} s")
            self.in_use = max((0, 1), key=lambda i: self.version[i])
            return self.bufs[self.in_use], self.version[self.in_use][1]


class Collective:
    """The controller's side: forms the group (again, when generators changed) and has every member take part."""

    name = "collective"

    def __init__(self, learner, cfg):
        import ray

        r = cfg.ray
        on_gpu = r.generator.num_gpus > 0 and r.learner.num_gpus > 0 and cfg.device != "cpu"
        self.learner, self.backend, self.epoch, self.members = learner, "nccl" if on_gpu else "gloo", 0, set()
        self.numel, self.dtype, self.address = ray.get([learner.weights_numel.remote(), learner.weights_dtype.remote(),
                                                        learner.rendezvous.remote()])
        self.stats = {"broadcast_fallbacks": 0}

    def stale(self, generators: dict) -> bool:
        """Generators came or went since the group was formed: it must be formed again."""
        return self.members is not None and set(generators) != self.members

    def publish(self, version: int, epoch: int, in_use: set[int], generators: dict) -> Published:
        """Send the current version to every generator. A broadcast that fails (a generator died in it) falls back
        to the object store for this version, and the group is formed again at the next publish."""
        import ray

        if not generators:  # none started yet: the first one to start forms a group and gets this version then
            self.members = set()
            return Published(version, collective=True, epoch=epoch, dtype=self.dtype)
        try:
            if set(generators) != (self.members or set()):
                self._form(generators)
            ray.get([self.learner.broadcast_weights.remote(), *[a.receive.remote(version, epoch) for a in generators.values()]],
                    timeout=BROADCAST_TIMEOUT_S)
            return Published(version, collective=True, epoch=epoch, dtype=self.dtype)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            print(f"srum: broadcast of version {version} failed, sent over the object store: {str(e)[-1500:]}", flush=True)
            self.members = None
            self.stats["broadcast_fallbacks"] += 1
            return Published(version, ref=[self.learner.weights.remote()], epoch=epoch, dtype=self.dtype)

    def _form(self, generators: dict) -> None:
        import ray

        self.epoch, world = self.epoch + 1, len(generators) + 1
        joins = [a.join_broadcast.remote(self.address, self.epoch, i + 1, world, self.backend, self.numel, self.dtype)
                 for i, a in enumerate(generators.values())]
        ray.get([self.learner.join_broadcast.remote(self.epoch, world, self.backend), *joins], timeout=BROADCAST_TIMEOUT_S)
        self.members, self.stats["broadcast_epochs"] = set(generators), self.epoch

    def close(self) -> None:
        pass
