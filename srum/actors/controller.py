"""The controller: a named actor that streams batches generator -> judge -> learner with bounded
staleness, publishes weights, checkpoints, and answers `srum scale` / `stop` while it runs.

Bounded staleness, by construction: a new batch is issued only while at most `max_staleness` issued
batches are still unfinished (not yet learned from or dropped), and every batch is generated with the
newest published weights. A batch is therefore learned from at most `max_staleness` versions after the
one that made it; `max_staleness: 0` is lock-step, the local engine's order exactly. A batch that
still lags by more (weights published every `sync_every` > 1 steps, a re-issued batch) is dropped and
counted. The in-flight window also bounds memory, however the stages' speeds differ.

Data never passes through the controller: it hands object references from one actor to the next
(one call per batch), and reads only the small metadata each call returns.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import ray

from ..config import TrainConfig
from ..metrics import Recorder
from .group import ActorGroup
from .learner_group import LearnerGroup
from .weights import BROADCAST_TIMEOUT_S, Published, choose_transport, free_slot, ring_slots
from .workers import GeneratorActor, JudgeActor


HISTORY_KEYS = ("step", "version", "staleness", "generators", "judges", "global_reward", "local_reward", "total", "kl_term")


@dataclass
class Batch:
    index: int  # data position in batches: prompts index * prompts_per_step onwards, seed (seed, index)
    version: int  # the policy version it was generated with
    rollouts: object = None  # ObjectRef
    judgements: object = None  # ObjectRef
    meta: dict = field(default_factory=dict)


@ray.remote(num_cpus=0, max_concurrency=4)
class Controller:
    def __init__(self, cfg_json: str, run_dir: str):
        self.cfg_json, self.cfg = cfg_json, TrainConfig.model_validate_json(cfg_json)
        self.dir = Path(run_dir)
        self.want = {"generator": self.cfg.ray.generators, "judge": self.cfg.ray.judges}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.counts = {"generated": 0, "judged": 0, "consumed": 0, "dropped_stale": 0, "reissued": 0,
                       "abandoned_at_stop": 0, "weight_versions": 0}
        self.step, self.version, self.result = 0, 0, None
        self.sync = {"fetch_s": 0.0, "fetch_bytes": 0, "fetches": 0}
        self.history: list[dict] = []
        self.metrics = Recorder("controller", self.cfg.ray.name)
        self.metrics.touch("srum_dropped_stale")
        for role in ("generator", "judge"):
            self.metrics.touch("srum_restarts", role=role)  # labelled with the role of the actors replaced

    # ---- called from outside while run() runs (other threads of this actor) ----
    def scale(self, generators: int | None = None, judges: int | None = None) -> dict:
        with self.lock:
            if generators is not None:
                self.want["generator"] = max(1, generators)
            if judges is not None:
                self.want["judge"] = max(1, judges)
        return self.status()

    def status(self) -> dict:
        g, j = getattr(self, "gens", None), getattr(self, "judges", None)
        return {"step": self.step, "version": self.version, "want": dict(self.want),
                "generators": g.running if g else 0, "judges": j.running if j else 0,
                "pending": {"generator": len(g.pending) if g else 0, "judge": len(j.pending) if j else 0}, **self.counts,
                "history": self.history[-50:], "stopping": self.stopping.is_set(), "finished": self.finished.is_set()}

    def stop(self, timeout: float = 60.0) -> dict | None:
        """Finish the current learner step, checkpoint, and return the run summary."""
        self.stopping.set()
        self.finished.wait(timeout)
        return self.result

    # ---- the loop ----
    def run(self) -> dict:
        try:
            self.result = self._run()
            return self.result
        finally:
            self._release()
            self.finished.set()

    def _release(self) -> None:
        """Kill every actor this run started and free its reservations (also after an error)."""
        for group in (getattr(self, "gens", None), getattr(self, "judges", None)):
            if group is not None:
                group.shutdown()
        if getattr(self, "learners", None) is not None:
            if getattr(self, "transport", None) == "shared_memory":
                try:
                    ray.get(self.learner.close_ring.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - a dead learner: its ring file is all that is left behind
                    pass
            self.learners.shutdown()

    def _run(self) -> dict:
        c, r = self.cfg, self.cfg.ray
        pps = c.rollout.prompts_per_step
        self.learners = LearnerGroup(self.cfg_json, r, str(self.dir))
        self.learner = self.learners.lead  # rank 0 speaks for the group: weights, version, checkpoints
        state = self.learners.resume()
        self.step = state["step"] if state else 0
        next_index = state["data_position"] // pps if state else 0
        self.version = ray.get(self.learner.version.remote())
        self._open_transport()
        self.gens = ActorGroup("generator", GeneratorActor, (self.cfg_json, r.generator.threads), r.generator, r.placement)
        self.judges = ActorGroup("judge", JudgeActor, (self.cfg_json, r.judge.threads), r.judge, r.placement)
        self.gens.add(self.want["generator"])
        self.judges.add(self.want["judge"])
        # every actor up (models loaded) before the clock starts: start-up is not throughput
        ray.get([a.ping.remote() for a in [*self.gens.actors.values(), *self.judges.actors.values()]])
        generating, judging = {}, {}  # meta ref -> (actor id, Batch)
        weights = self._publish(generating, judging)
        to_judge, to_learn, retry = deque(), deque(), deque()
        learning, unfinished = None, 0  # (ref, Batch) in the learner; batches issued and not yet learned or dropped
        self.t0, self.idle_s, last_health = time.perf_counter(), 0.0, time.perf_counter()
        self.metrics_file = (self.dir / "metrics.jsonl").open("a")
        window = deque(maxlen=max(1, r.status_every))
        while self.step < c.steps and not self.stopping.is_set():
            self._apply_scale()
            if self.transport == "collective" and self.members is not None and set(self.gens.actors) != self.members:
                weights = self._broadcast()  # generators came or went: a new group, and the current version again
            # 1. issue generation: within the staleness window, to idle generators
            while unfinished <= r.max_staleness and self.step + unfinished < c.steps:
                got = self.gens.take()
                if got is None:
                    break
                aid, actor = got
                index = retry.popleft() if retry else next_index
                next_index += 0 if index < next_index else 1
                b = Batch(index, weights.version)
                meta_ref, b.rollouts = actor.generate.options(num_returns=2).remote(index, weights)
                generating[meta_ref] = (aid, b)
                unfinished += 1
            # 2. judge what is generated
            while to_judge and (got := self.judges.take()) is not None:
                aid, actor = got
                b = to_judge.popleft()
                b.meta["judge_weights"] = weights.version  # the version a following judge reads
                meta_ref, b.judgements = actor.score.options(num_returns=2).remote(
                    b.rollouts, weights if c.learner.judge_follows else None)
                judging[meta_ref] = (aid, b)
            # 3. learn from the oldest scored batch, or drop it if too stale
            while learning is None and to_learn:
                b = min(to_learn, key=lambda x: x.version)  # the oldest first: it is the nearest to going stale
                to_learn.remove(b)
                if self.version - b.version > r.max_staleness:
                    self.counts["dropped_stale"] += 1
                    self.metrics.inc("srum_dropped_stale")
                    unfinished -= 1
                    continue
                sample = self._sample_path(self.step + 1)
                learning, learning_batch = self.learners.step(b.rollouts, b.judgements, sample), b
            # wait for whatever finishes first
            pending = list(generating) + list(judging) + ([learning] if learning else [])
            tw = time.perf_counter()
            ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)
            if learning is None:
                self.idle_s += time.perf_counter() - tw
            self._queues(generating=len(generating), to_judge=len(to_judge), judging=len(judging),
                         to_learn=len(to_learn) + (learning is not None))
            for ref in ready:
                if ref in generating:
                    aid, b = generating.pop(ref)
                    if self._collect(self.gens, aid, ref, b):
                        self.counts["generated"] += 1
                        self.metrics.inc("srum_batches", event="generated")
                        self._count_sync(b.meta)
                        to_judge.append(b)
                    else:
                        retry.append(b.index)
                        unfinished -= 1
                        self.counts["reissued"] += 1
                        self.metrics.inc("srum_batches", event="reissued")
                        self.metrics.inc("srum_restarts", role="generator")
                elif ref in judging:
                    aid, b = judging.pop(ref)
                    if self._collect(self.judges, aid, ref, b):
                        self.counts["judged"] += 1
                        self.metrics.inc("srum_batches", event="judged")
                        to_learn.append(b)
                    else:
                        to_judge.appendleft(b)  # judge it again on another judge: the rollouts are kept
                        self.metrics.inc("srum_restarts", role="judge")
                else:
                    learning, unfinished = None, unfinished - 1
                    self._learned(ray.get(ref), learning_batch)  # a learner failure is fatal: resume from the checkpoint
                    window.append((time.perf_counter(), self.idle_s))
                    if self.step % r.sync_every == 0:
                        weights = self._publish(generating, judging)
                    if self.step % c.checkpoint_every == 0 and self.step < c.steps:  # the last one follows the loop
                        ray.get(self.learner.checkpoint.remote(self.step, next_index * pps))
                    self._autoscale(window)
            if time.perf_counter() - last_health > 30:
                for group in (self.gens, self.judges):
                    self.metrics.inc("srum_restarts", len(group.check_health()), role=group.role)
                last_health = time.perf_counter()
        # stopping: the learner's current step is done (we only stop between steps); checkpoint there
        if self.stopping.is_set():
            if learning is not None:
                self._learned(ray.get(learning), learning_batch)
            self.counts["abandoned_at_stop"] = len(generating) + len(judging) + len(to_judge) + len(to_learn)
        ray.get(self.learner.checkpoint.remote(self.step, next_index * pps))
        self.metrics_file.close()
        elapsed = time.perf_counter() - self.t0
        summary = {"steps_done": self.step, "version": self.version, **self.counts, "seconds": round(elapsed, 3),
                   "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
                   "restarts": {"generator": self.gens.restarts, "judge": self.judges.restarts},
                   "weight_sync": self.sync, "stopped": self.stopping.is_set()}
        return summary

    # ---- helpers ----
    def _learned(self, m: dict, b: Batch) -> None:
        """Book one finished learner step: counters, a metrics row, the status history."""
        self.step += 1
        self.version = m["version"]
        self.counts["consumed"] += 1
        elapsed = time.perf_counter() - self.t0
        row = {"step": self.step, "t": round(elapsed, 4), **m, "staleness": self.version - 1 - b.version, "batch": b.index,
               "generators": self.gens.running, "judges": self.judges.running,
               "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
               **self.counts, "generate_s": round(b.meta.get("generate_s", 0), 4), "judge_s": round(b.meta.get("judge_s", 0), 4)}
        self.metrics_file.write(json.dumps(row) + "\n")
        rec = self.metrics
        rec.inc("srum_batches", event="consumed")
        rec.set("srum_staleness", row["staleness"])
        rec.set("srum_policy_version", self.version)
        rec.set("srum_samples_per_second", row["samples_per_s"])
        rec.set("srum_idle_ratio", row["learner_idle_ratio"], stage="learn")
        self.metrics_file.flush()
        self.history.append({k: row[k] for k in HISTORY_KEYS})

    def _samples(self) -> int:
        return self.counts["consumed"] * self.cfg.rollout.prompts_per_step * self.cfg.rollout.samples_per_prompt

    def _open_transport(self) -> None:
        """Pick the weight transport (srum/actors/weights.py); auto falls back to the object store."""
        r = self.cfg.ray
        self.transport = choose_transport(r.weights, sum(n["Alive"] for n in ray.nodes()))
        self.slots, self.slot_of = ring_slots(r.max_staleness), {}  # slot_of: version -> its ring slot
        if self.transport == "shared_memory":
            try:
                ray.get(self.learner.open_ring.remote(self.slots, r.name))
            except ray.exceptions.RayTaskError as e:
                if r.weights != "auto":
                    raise
                print(f"srum: weights over the object store ({e.cause})", flush=True)
                self.transport = "object_store"
        if self.transport == "collective":  # generators on GPUs receive on them when the learner is on one too
            on_gpu = r.generator.num_gpus > 0 and r.learner.num_gpus > 0 and self.cfg.device != "cpu"
            self.backend, self.epoch, self.members = "nccl" if on_gpu else "gloo", 0, set()
            self.numel, self.store_address = ray.get([self.learner.weights_numel.remote(), self.learner.rendezvous.remote()])
        self.sync["transport"] = self.transport
        self.sync["broadcast_fallbacks"] = 0

    def _publish(self, generating: dict, judging: dict) -> Published:
        """Object store: one put per version (the learner's return value), not awaited: generators block on it
        only when they need it. Shared memory: one copy into a slot that no batch in flight reads (awaited:
        the copy must be whole before a generator reads it)."""
        self.counts["weight_versions"] += 1
        if self.transport == "object_store":
            return Published(self.version, ref=[self.learner.weights.remote()])
        if self.transport == "collective":
            return self._broadcast()
        versions = {b.version for _, b in generating.values()}
        if self.cfg.learner.judge_follows:
            versions |= {b.meta["judge_weights"] for _, b in judging.values()}
        in_use = {self.slot_of[v] for v in versions if v in self.slot_of}
        if self.slot_of:
            in_use.add(self.slot_of[max(self.slot_of)])  # the newest: batches about to be issued read it
        slot = free_slot(self.slots, in_use)
        self.slot_of = {v: s for v, s in self.slot_of.items() if s != slot}
        self.slot_of[self.version] = slot
        return ray.get(self.learner.write_slot.remote(slot))

    def _broadcast(self) -> Published:
        """Send the current version to every generator; first form a new group (epoch) if they changed.
        A broadcast that fails (a generator died in it) falls back to the object store for this version,
        and the group is formed again at the next publish."""
        gens = dict(self.gens.actors)
        if not gens:  # none started yet: the first one to start forms a group and gets this version then
            self.members = set()
            return Published(self.version, collective=True)
        try:
            if set(gens) != (self.members or set()):
                self.epoch, world = self.epoch + 1, len(gens) + 1
                joins = [a.join_broadcast.remote(self.store_address, self.epoch, i + 1, world, self.backend, self.numel)
                         for i, a in enumerate(gens.values())]
                ray.get([self.learner.join_broadcast.remote(self.epoch, world, self.backend), *joins], timeout=BROADCAST_TIMEOUT_S)
                self.members, self.sync["broadcast_epochs"] = set(gens), self.epoch
            ray.get([self.learner.broadcast_weights.remote(), *[a.receive.remote(self.version) for a in gens.values()]],
                    timeout=BROADCAST_TIMEOUT_S)
            return Published(self.version, collective=True)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            print(f"srum: broadcast of version {self.version} failed, sent over the object store: {str(e)[-1500:]}", flush=True)
            self.members = None  # formed again at the next publish; until then the object store serves
            self.sync["broadcast_fallbacks"] += 1
            return Published(self.version, ref=[self.learner.weights.remote()])

    def _queues(self, **depth: int) -> None:
        for stage, n in depth.items():
            self.metrics.set("srum_queue_depth", n, stage=stage)

    def _count_sync(self, meta: dict) -> None:
        if meta.get("sync_bytes"):
            self.sync["fetch_s"] += meta["sync_s"]
            self.sync["fetch_bytes"] += meta["sync_bytes"]
            self.sync["fetches"] += 1

    def _collect(self, group: ActorGroup, aid: int, ref, b: Batch) -> bool:
        """Read a finished call's metadata; on a dead actor, replace it and report failure."""
        try:
            b.meta.update(ray.get(ref))
            group.release(aid)
            return True
        except ray.exceptions.RayActorError:
            group.replace(aid)
            return False

    def _apply_scale(self) -> None:
        with self.lock:
            want = dict(self.want)
        self.gens.resize(want["generator"])
        self.judges.resize(want["judge"])

    def _autoscale(self, window: deque) -> None:
        r = self.cfg.ray
        if not r.autoscale or len(window) < window.maxlen:
            return
        (t_a, idle_a), (t_b, idle_b) = window[0], window[-1]
        if t_b > t_a and (idle_b - idle_a) / (t_b - t_a) > r.autoscale_idle and self.want["generator"] < r.max_generators:
            with self.lock:
                self.want["generator"] += 1
            window.clear()

    def _sample_path(self, step: int) -> str | None:
        if self.cfg.ray.stages == "stand_in" or (step % self.cfg.sample_every and step != self.cfg.steps):
            return None
        return str(self.dir / "samples" / f"step_{step:06d}.png")
