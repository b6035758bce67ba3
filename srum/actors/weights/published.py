"""One weight version as it travels with the calls, and how a worker reads its buffer."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...models.synced import wire_dtype, wire_tensor


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
    digest: tuple | None = None  # flat_digest of the version's weights (srum/models/synced.py): a generator checks it
    dtype: str = "float32"  # the learner's flat buffer's dtype, carried bit for bit (bf16 as its raw int16 bits)


_mapped: dict[str, np.memmap] = {}  # per worker process: each ring is mapped once


def fetch(p: Published):
    """The flat buffer of a published version in its own dtype, read-only and zero-copy: object store or ring (a
    broadcast version is in the generator's staging buffers instead). A numpy array where numpy has the dtype
    (float32), else a torch tensor over the same memory (bf16; `wire_tensor`)."""
    if p.ref is not None:
        import ray

        return wire_tensor(ray.get(p.ref[0]), p.dtype)
    if p.path not in _mapped:
        if not os.path.exists(p.path):
            raise RuntimeError(f"weights ring {p.path} is not on this node: ray.weights=shared_memory needs every "
                               "generator on the learner's node; use ray.weights=object_store on multi-node clusters")
        _mapped[p.path] = np.memmap(p.path, wire_dtype(p.dtype), "r").reshape(-1, p.numel)
    return wire_tensor(_mapped[p.path][p.slot], p.dtype)
