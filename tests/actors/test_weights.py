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
    assert choose_transport("auto", 1, grows=True) == "object_store"  # ray.autoscale: nodes added later
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


# ---- every transport carries the flat buffer's own dtype bit for bit: bf16 (numpy has none) as its raw bits

def bf16_bits(n: int, seed: int = 0):
    """n bf16 values of every bit pattern (random int16 bits: NaNs with payloads, infinities, -0, subnormals)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2**15, 2**15, (n,), dtype=torch.int16, generator=g).view(torch.bfloat16)


def same_bits(a, b) -> bool:
    import torch

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.dtype == b.dtype and torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_the_wire_form_is_the_buffers_bytes_and_comes_back_bit_exact():
    import pickle

    import torch

    from srum.models.synced import dtype_name, wire_array, wire_dtype, wire_tensor

    flat = bf16_bits(5000)
    a = wire_array(flat)
    assert a.dtype == np.int16 and a.nbytes == flat.nbytes and wire_dtype("bfloat16") == np.int16
    assert a.ctypes.data == flat.data_ptr()  # a view, not a copy
    buffers = []  # as Ray serialises an actor's return value: pickle 5, the array's memory out of band
    moved = pickle.loads(pickle.dumps(a, protocol=5, buffer_callback=buffers.append), buffers=buffers)
    back = wire_tensor(moved, dtype_name(flat.dtype))
    assert back.dtype == torch.bfloat16 and same_bits(back, flat)
    f32 = torch.randn(100)  # float32: the numpy array itself, as before
    assert wire_array(f32).dtype == np.float32 and wire_tensor(wire_array(f32), "float32") is not None
    assert np.array_equal(wire_tensor(wire_array(f32), "float32"), f32.numpy())
    with pytest.raises(ValueError, match="published as float32 arrived as a numpy int16"):
        wire_tensor(a, "float32")
    with pytest.raises(ValueError, match="'int8': not a floating-point torch dtype"):
        wire_dtype("int8")


def test_object_store_round_trips_a_bf16_buffer(monkeypatch):
    """What a generator's fetch makes of the learner's return value (the object store holds the wire array)."""
    import pickle

    import ray

    from srum.models.synced import wire_array

    flat = bf16_bits(3000, seed=1)
    stored = pickle.dumps(wire_array(flat), protocol=5)
    monkeypatch.setattr(ray, "get", lambda ref: pickle.loads(stored))
    got = fetch(weights.Published(3, ref=["the learner's return value"], dtype="bfloat16"))
    assert same_bits(got, flat)


def test_ring_round_trips_a_bf16_buffer_in_two_bytes_a_value():
    import torch

    from srum.models.synced import wire_array

    a, b = bf16_bits(1000, seed=2), bf16_bits(1000, seed=3)
    ring = SlotRing(numel=1000, slots=3, tag="test-bf16", dtype="bfloat16")
    try:
        assert ring.path.stat().st_size == 3 * 1000 * 2  # sized in the buffer's bytes, not float32's
        pa, pb = ring.write(0, a, version=1), ring.write(1, wire_array(b), version=2)  # a tensor, or its wire array
        assert (pa.dtype, pb.dtype) == ("bfloat16", "bfloat16")
        got_a, got_b = fetch(pa), fetch(pb)
        assert got_a.dtype == torch.bfloat16 and same_bits(got_a, a) and same_bits(got_b, b)
        ring.write(0, b, version=3)  # still the mapping: a view of the slot
        assert same_bits(got_a, b)
        with pytest.raises(ValueError, match="dtype float32 into a weights ring of bfloat16"):
            ring.write(2, torch.zeros(1000), version=4)
        with pytest.raises(ValueError, match="numpy float32 array of 1000 values into a weights ring of bfloat16"):
            ring.write(2, np.zeros(1000, np.float32), version=4)
    finally:
        ring.close()


def broadcast_in_threads(sent, dtype: str):
    """A real gloo broadcast group of two ranks in two threads: rank 0 sends `sent`, rank 1 receives into its
    staging buffers, as a generator does; returns what rank 1 holds."""
    import threading

    import torch.distributed as dist
    from ray_head import free_port

    from srum.actors.weights.collective import BroadcastGroup, StagingBuffers

    port = free_port()
    master = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    address, staging, groups, errors = f"127.0.0.1:{port}", StagingBuffers(sent.numel(), "cpu", dtype), {}, []

    def rank(r):
        try:
            groups[r] = BroadcastGroup(address, 1, r, 2, "gloo")
            if r == 0:
                groups[0].broadcast(sent)
            else:
                staging.receive(groups[1], version=7)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join(300) for t in threads]  # seconds on an idle machine
    assert not any(t.is_alive() for t in threads), "the broadcast did not finish in 300 s"
    del master
    assert not errors, errors
    got, version = staging.take(7, timeout=1)
    assert version == 7
    return got


def test_collective_broadcasts_a_bf16_buffer_into_bf16_staging(monkeypatch):
    import torch

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    flat = bf16_bits(4000, seed=4)
    got = broadcast_in_threads(flat, "bfloat16")
    assert got.dtype == torch.bfloat16 and same_bits(got, flat)
    f32 = torch.randn(4000, generator=torch.Generator().manual_seed(5))  # float32 as before
    got = broadcast_in_threads(f32, "float32")
    assert got.dtype == torch.float32 and torch.equal(got.view(torch.int32), f32.view(torch.int32))


def two_param_model():
    """A generator's model in miniature: two bf16 parameters synced as one flat buffer."""
    import torch

    from srum.models.synced import SyncedWeights

    class Model(SyncedWeights):
        def __init__(self):
            self.net = torch.nn.Module()
            self.net.a = torch.nn.Parameter(torch.zeros(3000, dtype=torch.bfloat16))
            self.net.b = torch.nn.Parameter(torch.zeros(70, 300, dtype=torch.bfloat16))
            self.synced, self.policy_version = [self.net.a, self.net.b], 0

    return Model()


@pytest.mark.parametrize("transport", ["object_store", "shared_memory"])
def test_the_digest_check_passes_for_a_bf16_version_and_catches_one_flipped_element(transport, monkeypatch):
    """The learner's digest of its bf16 buffer (`flat_digest`) against the generator's of the weights it loaded
    (`weights_digest`), as GeneratorActor._check_digest compares them."""
    import pickle

    import ray
    import torch

    from srum.models.synced import digests_match, flat_digest, wire_array

    learner = torch.randn(24000, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    published = flat_digest(learner)
    ring = None
    if transport == "object_store":
        stored = pickle.dumps(wire_array(learner), protocol=5)
        monkeypatch.setattr(ray, "get", lambda ref: pickle.loads(stored))
        p = weights.Published(1, ref=["ref"], dtype="bfloat16")
    else:
        ring = SlotRing(numel=24000, slots=3, tag="test-digest", dtype="bfloat16")
        p = ring.write(0, learner, version=1)
    try:
        model, got = two_param_model(), fetch(p)  # as a generator loads a version: its parameters views of the buffer
        model.load_flat_weights(got, 1, share=True)
        assert model.net.a.dtype == torch.bfloat16 and same_bits(torch.cat([model.net.a, model.net.b.reshape(-1)]), learner)
        assert model.net.a.data_ptr() == got.data_ptr()  # no copy
        assert digests_match(model.weights_digest(), published) and digests_match(flat_digest(got), published)
        flipped = learner.clone()
        flipped.view(torch.int16)[100] ^= 0x0040  # one element, one mantissa bit (inside the digest's first chunk)
        other = two_param_model()
        other.load_flat_weights(flipped, 1)
        assert not digests_match(other.weights_digest(), published)
    finally:
        if ring is not None:
            ring.close()
