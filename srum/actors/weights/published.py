"""One weight version as it travels with the calls, and how a worker reads its buffer."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


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
