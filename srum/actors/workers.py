"""Ray actors for the three roles. Each is a thin wrapper around a stage of srum/stages.py (real or stand-in, chosen
there): it adds weight loading, timing and metrics and nothing else, so the algorithm has one implementation.

Weights travel as a small `Published` handle with each call (srum/actors/weights/: the object store,
a shared-memory ring, or a broadcast into a generator's staging buffers); an actor fetches the buffer (zero-copy) only when the handle's version is
newer than the one it holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
import torch

from ..config import TrainConfig
from ..io import StopRun
from ..metrics import Recorder
from ..models.synced import digests_match, dtype_name
from ..run import Run
from ..stages import judge_stage, learner_stage, rollout_stage
from .weights.collective import (
    BroadcastGroup,
    StagingBuffers,
    connect_store,
    host_store,
)
from .weights.published import Published, fetch
from .weights.shared_memory import SlotRing

LEARNER_TIMEOUT_S = 300  # a collective waiting longer than this on a lost peer fails the step (and the run)


def _setup(cfg_json: str, threads: int) -> TrainConfig:
    torch.set_num_threads(threads)
    cfg = TrainConfig.model_validate_json(cfg_json)
    if cfg.device == "auto":  # an actor uses a GPU only when Ray gave it one (its num_gpus)
        cfg = cfg.model_copy(update={"device": "cuda" if ray.get_gpu_ids() else "cpu"})
    return cfg


class Located:
    """Where an actor runs: its process (fault-injection tests kill it) and its node (the placement table)."""

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address()}


class Busy:
    """Wall time vs time spent working, for the idle-ratio metric."""

    def __init__(self):
        self.start, self.busy = time.perf_counter(), 0.0

    def add(self, seconds: float) -> float:
        self.busy += seconds
        wall = time.perf_counter() - self.start
        return max(0.0, 1.0 - self.busy / wall) if wall > 0 else 0.0


NONE = (-1, -1)  # (learner epoch, version) of an actor that holds no published weights yet


def _fetch(weights: Published | None, held: tuple[int, int], load, get=None) -> tuple[tuple[int, int], float, int]:
    """Load `weights` if newer than `held` ((epoch, version): a restarted learner is a new epoch, whose versions
    count again from its checkpoint); returns ((epoch, version), seconds, bytes). `get(weights)` -> (buffer,
    version) finds the buffer: by default `fetch` (object store, ring); a generator's staging buffers for a
    broadcast version (which may hold a newer version than asked for)."""
    if weights is None or (weights.epoch, weights.version) <= held:
        return held, 0.0, 0
    t = time.perf_counter()
    flat, version = get(weights) if get else (fetch(weights), weights.version)
    load(flat, version)
    return (weights.epoch, version), time.perf_counter() - t, flat.nbytes


@ray.remote(max_restarts=0, concurrency_groups={"sync": 1})
class GeneratorActor(Located):
    """`generate` runs in the default concurrency group; the collective transport's `join_broadcast` and
    `receive` in "sync", so that a broadcast is received while a batch is being generated."""

    def __init__(self, cfg_json: str, threads: int, name: str = "generator"):
        self.stage = rollout_stage(_setup(cfg_json, threads))
        self.version = NONE  # no weights yet: the first batch always loads the current ones
        self.metrics, self.clock = Recorder("generator", name), Busy()
        self.metrics.touch("srum_weight_digest_mismatch")
        self.staging, self.group = None, None

    def ping(self) -> int:
        return self.version[1]

    def _check_digest(self, weights: Published) -> None:
        """After every sync (and so before the first batch): the weights this generator samples with are the ones
        the learner published, or the run stops by name. A broadcast that delivered a newer version than the handle
        names has no digest here to compare with: checked at the next handle of its version."""
        if weights.digest is None or self.version[1] != weights.version or not hasattr(self.stage, "weights_digest"):
            return
        held = self.stage.weights_digest()
        if not digests_match(held, weights.digest):
            self.metrics.inc("srum_weight_digest_mismatch")
            first = next(i for i, (a, b) in enumerate(zip(held, weights.digest)) if not digests_match((a,), (b,)))
            raise StopRun("weight_digest_mismatch", f"a generator (pid {os.getpid()}) holds other weights than the "
                          f"learner published as version {weights.version}: chunk {first} of the flat weights sums to "
                          f"{held[first]!r}, published {weights.digest[first]!r}; no batch was generated from them",
                          weights.version)

    @ray.method(concurrency_group="sync")
    def join_broadcast(self, address: str, epoch: int, rank: int, world: int, backend: str, numel: int,
                       dtype: str = "float32") -> None:
        if self.staging is None:  # gloo receives on the host (the load then copies to a GPU); NCCL on the device
            self.staging = StagingBuffers(numel, self.stage.device if backend == "nccl" else "cpu", dtype)
        self.group = BroadcastGroup(address, epoch, rank, world, backend)

    @ray.method(concurrency_group="sync")
    def receive(self, version: int, epoch: int = 0) -> None:
        self.staging.receive(self.group, version, epoch)

    def generate(self, batch: int, weights: Published) -> tuple[dict, list]:
        """Two returns: small metadata (read by the controller) and the rollouts (passed on by reference)."""
        take = (lambda w: self.staging.take(w.version, w.epoch)) if weights.collective else None
        self.version, sync_s, sync_bytes = _fetch(weights, self.version, self.stage.load, take)
        if sync_bytes:
            self._check_digest(weights)
        t = time.perf_counter()
        rollouts = self.stage.generate(batch)
        dt = time.perf_counter() - t
        m = self.metrics
        m.inc("srum_rollouts", len(rollouts))
        m.observe("srum_generate_seconds", dt)
        m.set("srum_policy_version", self.version[1])
        m.set("srum_idle_ratio", self.clock.add(dt + sync_s), stage="generate")
        if sync_bytes:
            m.observe("srum_weight_sync_seconds", sync_s)
            m.inc("srum_weight_sync_bytes", sync_bytes)
        return ({"batch": batch, "version": self.version[1], "n": len(rollouts), "ids": [r.id for r in rollouts], "generate_s": dt,
                 "sync_s": sync_s, "sync_bytes": sync_bytes}, rollouts)


@ray.remote(max_restarts=0)
class JudgeActor(Located):
    def __init__(self, cfg_json: str, threads: int, name: str = "judge"):
        self.stage = judge_stage(_setup(cfg_json, threads))
        self.version = (0, 0)  # the judge starts as the initial model; it moves only if configured to follow
        self.metrics, self.clock, self.fallbacks = Recorder("judge", name), Busy(), 0
        self.metrics.touch("srum_judge_parse_fallbacks")
        self.metrics.touch("srum_judge_failures")

    def ping(self) -> int:
        return self.version[1]

    def score(self, rollouts: list, weights: Published | None = None) -> tuple[dict, list]:
        self.version, _, _ = _fetch(weights, self.version, self.stage.load)  # weights: only when the judge follows
        t, timed_out = time.perf_counter(), self.stage.timed_out
        judgements = self.stage.score(rollouts)
        dt = time.perf_counter() - t
        self.metrics.observe("srum_judge_latency_seconds", dt)
        self.metrics.set("srum_idle_ratio", self.clock.add(dt), stage="judge")
        failed = sum(j.failed is not None for j in judgements)  # dropped by the learner, never scored 0
        self.metrics.inc("srum_judge_failures", failed)
        fallbacks = self.stage.fallbacks  # text judges count unparseable outputs
        self.metrics.inc("srum_judge_parse_fallbacks", fallbacks - self.fallbacks)
        self.fallbacks = fallbacks
        return {"judge_s": dt, "judge_hung": self.stage.timed_out > timed_out}, judgements


@ray.remote(max_restarts=0)
class LearnerActor(Located):
    """Rank `rank` of `world` data-parallel learners (1 by default); rank 0 speaks for the group."""

    def __init__(self, cfg_json: str, threads: int, run_dir: str, name: str = "learner", rank: int = 0, world: int = 1):
        self.cfg = _setup(cfg_json, threads)
        self.metrics = Recorder("learner", name) if rank == 0 else None
        self.dir, self.rank, self.world = Path(run_dir), rank, world
        self.run = Run(self.cfg, self.dir)  # for the sample grids it writes
        self.stage = learner_stage(self.cfg, shard=(rank, world))

    def rendezvous(self) -> str:
        """Rank 0: "host:port" of the run's rendezvous store on this node (started on first use), which
        the learners' process group and the weight-broadcast groups meet through."""
        if getattr(self, "store", None) is None:
            self.store, self.store_socket, self.store_address = host_store()
        return self.store_address

    def join(self, address: str) -> None:
        """Join the learners' process group: NCCL for learners on GPUs, gloo on CPUs."""
        import datetime

        import torch.distributed as dist

        backend = "nccl" if self.cfg.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=dist.PrefixStore("srum-learners/", connect_store(address)), rank=self.rank,
                                world_size=self.world, timeout=datetime.timedelta(seconds=LEARNER_TIMEOUT_S))

    def resume(self) -> dict | None:
        return self.stage.resume(self.dir)

    def version(self) -> int:
        return self.stage.version

    def step(self, rollouts: list, judgements: list, samples_at: int | None = None) -> dict:
        """One learner step; with `samples_at` (the step number) the batch's sample grid is written if one is due."""
        t = time.perf_counter()
        m = self.stage.step(rollouts, judgements)
        m["learn_s"] = round(time.perf_counter() - t, 4)
        r = self.metrics
        if r is None:  # ranks > 0: rank 0 reports the group's (all-reduced) figures
            return m
        r.observe("srum_learner_step_seconds", m["learn_s"])
        r.set("srum_policy_version", m["version"])
        r.set("srum_global_reward", m["global_reward"])
        r.set("srum_local_reward", m["local_reward"])
        r.set("srum_reward_map_mean", m["map_mean"])
        r.set("srum_logprob_gap", m.get("logprob_gap"))  # only at the steps that checked (issue 39)
        for term in ("total", "reward_term", "kl_term"):
            r.set("srum_loss", m[term], term=term)
        if samples_at is not None:
            self.run.write_samples(samples_at, rollouts, judgements)
        return m

    def weights(self):
        """The current weights as one flat buffer: returned once into the object store per version."""
        return self.stage.flat_weights()

    def weights_digest(self) -> tuple | None:
        """The digest a published version carries (None for stand-in stages, which have no model)."""
        return self.stage.weights_digest() if hasattr(self.stage, "weights_digest") else None

    # shared-memory transport (rank 0): a ring of slots on this node, written one version at a time
    def open_ring(self, slots: int, tag: str) -> str:
        self.ring = SlotRing(self.weights_numel(), slots, tag, self.weights_dtype())
        return str(self.ring.path)

    def write_slot(self, slot: int, epoch: int = 0) -> Published:
        return self.ring.write(slot, self.stage.flat_weights(), self.stage.version, epoch)

    def close_ring(self) -> None:
        if getattr(self, "ring", None) is not None:
            self.ring.close()

    # collective transport (rank 0): the source of every broadcast
    def join_broadcast(self, epoch: int, world: int, backend: str) -> None:
        self.group, self.backend = BroadcastGroup(self.rendezvous(), epoch, 0, world, backend), backend

    def broadcast_weights(self) -> int:
        t = self.stage.weights_tensor()  # the live buffer: on a GPU learner, NCCL sends it from the device
        self.group.broadcast(t if self.backend == "nccl" else t.cpu())
        return self.stage.version

    def weights_numel(self) -> int:
        return self.stage.weights_tensor().numel()

    def weights_dtype(self) -> str:
        """The flat buffer's dtype ('float32', 'bfloat16'): every transport carries it bit for bit."""
        return dtype_name(self.stage.weights_tensor().dtype)

    def checkpoint(self, step: int, data: dict) -> str | None:
        d = self.stage.checkpoint(self.dir, step, data)
        return str(d) if d else None
