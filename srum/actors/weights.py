"""How a published weight version travels from the learner to the rollout workers.

The learner publishes; each generate call carries a small `Published` handle; a worker fetches the
buffer only when the handle's version is newer than the one it holds. Two transports:

- object_store: one put per version into Ray's object store (the learner's return value); a worker's
  `ray.get` maps it zero-copy on its node and Ray moves it between nodes. Works on any cluster; costs
  two round trips through the raylet per version, which dominate for small models (~8 ms for 10 MB).
- shared_memory: a ring of slots in one file under /dev/shm on the learner's node. Publishing is one
  copy of the flat buffer into a free slot; a generator uses the slot in place (its parameters become
  views of it), with no call and no copy. Only for workers on the learner's node (one-node clusters).
- collective: a broadcast from the learner to every generator over a torch.distributed group of their
  own (NCCL between GPUs: device to device, no host copy; gloo on CPUs). Generators receive into a
  staging buffer while they generate (a second concurrency group) and switch to it between batches.
  The group is a standalone process group (not torch's default one, which a data-parallel learner
  uses, and which ray.util.collective's gloo backend takes over), so it can be rebuilt whenever
  generators come or go (`srum scale`, a replaced actor): a new epoch, the current version sent again.

A slot is never rewritten while a worker may still read it: the controller picks the slot, and it
knows the version of every batch in flight (`free_slot`). With at most max_staleness + 1 batches in
flight plus the newest version, max_staleness + 3 slots always leave one free.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class Published:
    """One weight version as it travels with the calls: small, pickled with each call."""

    version: int
    ref: list | None = None  # object_store: [ObjectRef], nested so that Ray does not fetch it per call
    path: str | None = None  # shared_memory: the ring file
    slot: int = 0
    numel: int = 0
    collective: bool = False  # sent by broadcast: the worker waits for its staging buffer to hold it
    epoch: int = 0  # the learner's incarnation: a restarted learner's versions count again from its checkpoint


class SlotRing:
    """The learner's side of the shared-memory transport: `slots` float32 buffers of `numel` values."""

    def __init__(self, numel: int, slots: int, tag: str = "srum"):
        need = numel * 4 * slots
        if not SHM_DIR.is_dir() or shutil.disk_usage(SHM_DIR).free < need + (256 << 20):
            raise RuntimeError(f"ray.weights=shared_memory needs {need / 2**20:.0f} MiB free in {SHM_DIR}; "
                               "use ray.weights=object_store")
        safe = re.sub(r"[^\w.-]", "_", tag)  # the run's name: keep it one plain file name
        remove_stale_rings(safe)
        self.path = SHM_DIR / f"{safe}-weights-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.slots = np.memmap(self.path, np.float32, "w+", shape=(slots, numel))
        self.numel = numel

    def write(self, slot: int, flat: np.ndarray, version: int, epoch: int = 0) -> Published:
        np.copyto(self.slots[slot], flat)  # the one copy a version costs
        return Published(version, path=str(self.path), slot=slot, numel=self.numel, epoch=epoch)

    def close(self) -> None:
        """Remove the file: workers that mapped it keep their mapping until they let go of it."""
        self.slots = None
        self.path.unlink(missing_ok=True)


def remove_stale_rings(tag: str) -> list[Path]:
    """Delete the rings of this run name that a crashed run left behind: their writer (the pid in the name) is
    gone. A ring whose writer lives is another run's, and stays."""
    removed = []
    for f in SHM_DIR.glob(f"{tag}-weights-*-*"):
        try:
            pid = int(f.name[len(tag) + len("-weights-"):].split("-")[0])
        except ValueError:
            continue
        if not _alive(pid):
            f.unlink(missing_ok=True)
            removed.append(f)
    if removed:
        print(f"srum: removed {len(removed)} weight ring(s) a crashed run left in {SHM_DIR}: {[f.name for f in removed]}", flush=True)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_mapped: dict[str, np.memmap] = {}  # per worker process: each ring is mapped once


def fetch(p: Published):
    """The flat buffer of a published version, read-only and zero-copy: object store or ring (a broadcast
    version is in the generator's staging buffers instead)."""
    if p.ref is not None:
        import ray

        return ray.get(p.ref[0])
    if p.path not in _mapped:
        if not os.path.exists(p.path):
            raise RuntimeError(f"weights ring {p.path} is not on this node: ray.weights=shared_memory needs every "
                               "generator on the learner's node; use ray.weights=object_store on multi-node clusters")
        _mapped[p.path] = np.memmap(p.path, np.float32, "r").reshape(-1, p.numel)
    return _mapped[p.path][p.slot]


def free_slot(slots: int, in_use: set[int]) -> int:
    for s in range(slots):
        if s not in in_use:
            return s
    raise RuntimeError(f"every one of {slots} weight slots is in use: {sorted(in_use)}")  # a bug in the bound above


def ring_slots(max_staleness: int) -> int:
    return max_staleness + 3


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
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([tensor], opts).wait()


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

    def __init__(self, numel: int, device: str):
        import threading

        import torch

        self.bufs = [torch.zeros(numel, dtype=torch.float32, device=device) for _ in range(2)]
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


def choose_transport(setting: str, nodes_alive: int) -> str:
    """auto: shared memory on a one-node cluster (every worker shares the learner's /dev/shm), else the object store."""
    if setting != "auto":
        return setting
    return "shared_memory" if nodes_alive == 1 and SHM_DIR.is_dir() else "object_store"
