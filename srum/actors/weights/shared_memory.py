"""The shared-memory transport: a ring of slots in one file under /dev/shm on the learner's node. Publishing is one
copy of the flat buffer into a free slot; a generator uses the slot in place (its parameters become views of it),
with no call and no copy. Only for workers on the learner's node.

A slot is never rewritten while a worker may still read it: the controller knows the version of every batch in
flight (`free_slot`). With at most max_staleness + 1 batches in flight plus the newest version, max_staleness + 3
slots always leave one free.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch

from ...models.synced import dtype_name, torch_dtype, wire_array, wire_dtype
from .published import Published

SHM_DIR = Path("/dev/shm")


class SlotRing:
    """The learner's side of the shared-memory transport: `slots` buffers of `numel` values of `dtype`, the flat
    buffer's own (bf16 as its raw int16 bits: numpy has no bf16; srum/models/synced.py `wire_array`)."""

    def __init__(self, numel: int, slots: int, tag: str = "srum", dtype: str = "float32"):
        self.dtype, wire = dtype, wire_dtype(dtype)
        need = numel * wire.itemsize * slots
        if not SHM_DIR.is_dir() or shutil.disk_usage(SHM_DIR).free < need + (256 << 20):
            raise RuntimeError(f"ray.weights=shared_memory needs {need / 2**20:.0f} MiB free in {SHM_DIR}; "
                               "use ray.weights=object_store")
        safe = re.sub(r"[^\w.-]", "_", tag)  # the run's name: keep it one plain file name
        remove_stale_rings(safe)
        self.path = SHM_DIR / f"{safe}-weights-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.slots = np.memmap(self.path, wire, "w+", shape=(slots, numel))
        self.numel = numel

    def write(self, slot: int, flat, version: int, epoch: int = 0) -> Published:
        """`flat`: the learner's buffer (a torch tensor of the ring's dtype) or its `wire_array`."""
        if isinstance(flat, torch.Tensor):
            if flat.dtype != torch_dtype(self.dtype):
                raise ValueError(f"flat weights of dtype {dtype_name(flat.dtype)} into a weights ring of {self.dtype}")
            flat = wire_array(flat)
        if flat.dtype != self.slots.dtype or flat.size != self.numel:
            raise ValueError(f"flat weights as a numpy {flat.dtype} array of {flat.size} values into a weights ring of "
                             f"{self.dtype} ({self.slots.dtype} on the wire), {self.numel} values a slot")
        np.copyto(self.slots[slot], flat)  # the one copy a version costs
        return Published(version, path=str(self.path), slot=slot, numel=self.numel, epoch=epoch, dtype=self.dtype)

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


def free_slot(slots: int, in_use: set[int]) -> int:
    for s in range(slots):
        if s not in in_use:
            return s
    raise RuntimeError(f"every one of {slots} weight slots is in use: {sorted(in_use)}")  # a bug in the bound above


def ring_slots(max_staleness: int) -> int:
    return max_staleness + 3


class SharedMemory:
    """The controller's side: picks each version's slot, which the learner then writes (awaited: the copy must be
    whole before a generator reads it)."""

    name = "shared_memory"

    def __init__(self, learner, cfg):
        import ray

        self.learner, self.slots, self.slot_of = learner, ring_slots(cfg.ray.max_staleness), {}  # version -> slot
        ray.get(learner.open_ring.remote(self.slots, cfg.ray.name))

    def publish(self, version: int, epoch: int, in_use: set[int], generators: dict):
        import ray

        used = {self.slot_of[v] for v in in_use if v in self.slot_of}
        if self.slot_of:
            used.add(self.slot_of[max(self.slot_of)])  # the newest: batches about to be issued read it
        slot = free_slot(self.slots, used)
        self.slot_of = {v: s for v, s in self.slot_of.items() if s != slot}
        self.slot_of[version] = slot
        return ray.get(self.learner.write_slot.remote(slot, epoch))

    def stale(self, generators: dict) -> bool:
        return False

    def close(self) -> None:
        import ray

        try:
            ray.get(self.learner.close_ring.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a dead learner: its ring file is removed by the next one (remove_stale_rings)
            pass
