"""The weight transports' pieces without Ray: the shared-memory ring, slot choice, transport choice."""

import numpy as np
import pytest

from srum.actors import weights
from srum.actors.weights import choose_transport, fetch
from srum.actors.weights.shared_memory import SlotRing, free_slot, ring_slots


def test_ring_round_trip_is_zero_copy_and_read_only(tmp_path, monkeypatch):
    ring = SlotRing(numel=1000, slots=3, tag="test/../run name")
    assert ring.path.parent == weights.SHM_DIR and ring.path.name.startswith("test_.._run_name-weights-")
    try:
        a, b = np.arange(1000, dtype=np.float32), -np.arange(1000, dtype=np.float32)
        pa, pb = ring.write(0, a, version=5), ring.write(2, b, version=6)
        got_a, got_b = fetch(pa), fetch(pb)
        assert pa.version == 5 and np.array_equal(got_a, a) and np.array_equal(got_b, b)
        assert not got_a.flags.writeable
        ring.write(0, b, version=9)  # the same mapping sees the slot's new contents: a view, not a copy
        assert np.array_equal(got_a, b)
    finally:
        ring.close()
    assert not ring.path.exists()


def test_a_ring_on_another_node_is_a_clear_error():
    p = weights.Published(1, path="/dev/shm/srum-weights-nowhere", slot=0, numel=4)
    with pytest.raises(RuntimeError, match="not on this node.*object_store"):
        fetch(p)


def test_a_ring_too_big_for_dev_shm_is_refused():
    with pytest.raises(RuntimeError, match="MiB free in /dev/shm"):
        SlotRing(numel=2**40, slots=4)


def test_free_slot_skips_slots_in_use():
    assert free_slot(4, {0, 1, 3}) == 2
    with pytest.raises(RuntimeError, match="in use"):
        free_slot(2, {0, 1})
    assert ring_slots(0) == 3 and ring_slots(2) == 5


def test_auto_uses_shared_memory_on_one_node_only():
    assert choose_transport("auto", 1) == "shared_memory"
    assert choose_transport("auto", 3) == "object_store"
    assert choose_transport("object_store", 1) == "object_store"


class FillGroup:
    """Stands in for a broadcast group: 'receives' by filling the buffer with the version."""

    def __init__(self):
        self.version = 0

    def broadcast(self, t):
        t.fill_(self.version)


def test_staging_never_receives_into_the_buffer_in_use_and_waits_for_a_whole_version():
    import threading

    from srum.actors.weights.collective import StagingBuffers

    s, g = StagingBuffers(8, "cpu"), FillGroup()
    g.version = 1
    s.receive(g, 1)
    used, v = s.take(1)
    assert v == 1 and float(used[0]) == 1
    for version in (2, 3, 4):  # several versions arrive while the batch with version 1 runs
        g.version = version
        s.receive(g, version)
        assert float(used[0]) == 1  # the buffer in use is untouched
    newer, v = s.take(2)  # asked for 2 or newer: gets the newest whole one
    assert v == 4 and float(newer[0]) == 4
    with pytest.raises(RuntimeError, match="did not arrive"):
        s.take(5, timeout=0.05)
    threading.Timer(0.1, lambda: (setattr(g, "version", 5), s.receive(g, 5))).start()
    _, v = s.take(5, timeout=5)  # waits for the receive running in another thread
    assert v == 5
