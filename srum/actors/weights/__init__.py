"""How a published weight version travels from the learner to the rollout workers: one module per transport.

The learner publishes; each generate call carries a small `Published` handle; a worker fetches the buffer only
when the handle's version is newer than the one it holds. On the controller's side a publisher per transport
(`open_publisher`) makes the handles:

- object_store.py: one put per version into Ray's object store; works on any cluster.
- shared_memory.py: a ring of slots in /dev/shm on the learner's node, used in place by the generators there.
- collective.py: a broadcast from the learner to every generator over a torch.distributed group of their own
  (NCCL between GPUs, gloo on CPUs).

Each carries the buffer in its own dtype, bit for bit (a bf16 learner's, which numpy lacks, as its raw bytes:
`wire_array` / `wire_tensor` in srum/models/synced.py); `Published.dtype` names it.
"""

from __future__ import annotations

from .published import Published, fetch
from .shared_memory import SHM_DIR


def choose_transport(setting: str, nodes_alive: int, grows: bool = False) -> str:
    """auto: shared memory on a one-node cluster (every worker shares the learner's /dev/shm), else the object store;
    also on one node that `grows` (ray.autoscale: a generator on a node added later cannot read this /dev/shm)."""
    if setting != "auto":
        return setting
    return "shared_memory" if nodes_alive == 1 and not grows and SHM_DIR.is_dir() else "object_store"


def open_publisher(cfg, learner):
    """The publisher of `ray.weights` (auto: shared memory on a one-node cluster, else the object store; shared
    memory that cannot be had falls back to the object store, saying so)."""
    import ray

    from .collective import Collective
    from .object_store import ObjectStore
    from .shared_memory import SharedMemory

    r = cfg.ray
    name = choose_transport(r.weights, sum(n["Alive"] for n in ray.nodes()), grows=r.autoscale)
    if name == "shared_memory":
        try:
            return SharedMemory(learner, cfg)
        except ray.exceptions.RayTaskError as e:
            if r.weights != "auto":
                raise
            print(f"srum: weights over the object store ({e.cause})", flush=True)
            name = "object_store"
    return Collective(learner, cfg) if name == "collective" else ObjectStore(learner)


__all__ = ["Published", "choose_transport", "fetch", "open_publisher"]
