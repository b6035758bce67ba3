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
from ..io import open_log
from ..metrics import Recorder
from ..rundir import latest_checkpoint
from ..trackers import Trackers
from .group import ActorGroup
from .learner_group import LearnerGroup
from .weights import (
    BROADCAST_TIMEOUT_S,
    Published,
    choose_transport,
    free_slot,
    ring_slots,
)
from .workers import GeneratorActor, JudgeActor

HISTORY_KEYS = ("step", "version", "staleness", "generators", "judges", "global_reward", "local_reward", "total", "kl_term")


class Cursor:
    """Which batches (by index) are learned, so that a checkpoint records exactly those and a resumed run makes
    every other one: every index below `frontier` is learned, `ahead` holds the learned ones above it (streaming
    learns out of order), `retry` the ones to make again (lost with an actor, or dropped as stale)."""

    def __init__(self, prompts_per_step: int, frontier: int = 0, ahead=()):
        self.pps, self.frontier, self.ahead, self.next, self.retry = prompts_per_step, frontier, set(ahead), frontier, deque()

    @classmethod
    def from_state(cls, state: dict | None, prompts_per_step: int) -> Cursor:
        if not state:
            return cls(prompts_per_step)
        return cls(prompts_per_step, state["data_position"] // prompts_per_step, state.get("learned_ahead", []))

    def issue(self) -> int:
        if self.retry:
            return self.retry.popleft()
        while self.next in self.ahead:
            self.next += 1
        self.next += 1
        return self.next - 1

    def give_back(self, index: int) -> None:
        self.retry.append(index)

    def learned(self, index: int) -> None:
        self.ahead.add(index)
        while self.frontier in self.ahead:
            self.ahead.remove(self.frontier)
            self.frontier += 1

    def state(self) -> dict:
        """What a checkpoint records: data_position in prompts (as the local engine counts), learned batches above it."""
        return {"data_position": self.frontier * self.pps, "learned_ahead": sorted(self.ahead)}


@dataclass
class Batch:
    index: int  # data position in batches: prompts index * prompts_per_step onwards, seed (seed, index)
    version: int  # the policy version it was generated with
    rollouts: object = None  # ObjectRef
    judgements: object = None  # ObjectRef
    meta: dict = field(default_factory=dict)


def live_pids(actors: list, timeout: float = 30.0) -> list[int]:
    pids = []
    for ref in [a.pid.remote() for a in actors]:
        try:
            pids.append(ray.get(ref, timeout=timeout))
        except ray.exceptions.RayActorError:
            pass  # dead: the loop replaces it on its next call
    return pids


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
                       "restarts_generator": 0, "restarts_judge": 0, "abandoned_at_stop": 0, "cancelled_at_stop": 0,
                       "weight_versions": 0}
        self.step, self.version, self.result = 0, 0, None
        self.epoch, self.learner_restarts = 0, 0  # learner incarnations: a restarted learner is a new epoch
        self.sync = {"fetch_s": 0.0, "fetch_bytes": 0, "fetches": 0}
        self.history: list[dict] = []
        self.metrics = Recorder("controller", self.cfg.ray.name)
        self.metrics.touch("srum_dropped_stale")
        for role in ("generator", "judge", "learner"):
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

    def actor_pids(self) -> dict[str, list[int]]:
        """The process ids of the run's live actors by role (for fault-injection tests and benches). An actor
        killed but not yet found dead by the loop is left out rather than failing the whole call."""
        groups = {"generator": getattr(self, "gens", None), "judge": getattr(self, "judges", None)}
        actors = {role: list(g.actors.values()) if g else [] for role, g in groups.items()}
        learners = getattr(self, "learners", None)
        actors["learner"] = list(learners.actors) if learners else []
        return {role: live_pids(group) for role, group in actors.items()}

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
        self._release_learners()

    def _release_learners(self) -> None:
        if getattr(self, "learners", None) is None:
            return
        if getattr(self, "transport", None) == "shared_memory":
            try:
                ray.get(self.learner.close_ring.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead learner: its ring file is removed by the next one (stale_rings)
                pass
        self.learners.shutdown()
        self.learners = None

    def _run(self) -> dict:
        c, r = self.cfg, self.cfg.ray
        self._start_learners()
        self.gens = ActorGroup("generator", GeneratorActor, (self.cfg_json, r.generator.threads), r.generator, r.placement)
        self.judges = ActorGroup("judge", JudgeActor, (self.cfg_json, r.judge.threads), r.judge, r.placement)
        self.gens.add(self.want["generator"])
        self.judges.add(self.want["judge"])
        # every actor up (models loaded) before the clock starts: start-up is not throughput
        ray.get([a.ping.remote() for a in [*self.gens.actors.values(), *self.judges.actors.values()]])
        self.generating, self.judging = {}, {}  # meta ref -> (actor id, Batch)
        lg = c.logging
        self.trackers = Trackers(lg.trackers, self.dir, c.model_dump(mode="json"), lg.project, lg.wandb_mode, lg.mlflow_uri)
        weights = self._publish()
        self.to_judge, self.to_learn = deque(), deque()
        self.learning = None  # (ref, Batch) in the learner
        self.t0, self.idle_s, last_health = time.perf_counter(), 0.0, time.perf_counter()
        window = deque(maxlen=max(1, r.status_every))
        while self.step < c.steps and not self.stopping.is_set():
            self._apply_scale()
            if self.transport == "collective" and self.members is not None and set(self.gens.actors) != self.members:
                weights = self._broadcast()  # generators came or went: a new group, and the current version again
            # 1. issue generation: within the staleness window, to idle generators
            while self._unfinished() <= r.max_staleness and self.step + self._unfinished() < c.steps:
                got = self.gens.take()
                if got is None:
                    break
                aid, actor = got
                b = Batch(self.cursor.issue(), weights.version)
                meta_ref, b.rollouts = actor.generate.options(num_returns=2).remote(b.index, weights)
                self.generating[meta_ref] = (aid, b)
            # 2. judge what is generated
            while self.to_judge and (got := self.judges.take()) is not None:
                aid, actor = got
                b = self.to_judge.popleft()
                b.meta["judge_weights"] = weights.version  # the version a following judge reads
                meta_ref, b.judgements = actor.score.options(num_returns=2).remote(
                    b.rollouts, weights if c.learner.judge_follows else None)
                self.judging[meta_ref] = (aid, b)
            # 3. learn from the oldest scored batch, or send it back to be made again if too stale
            while self.learning is None and self.to_learn:
                b = min(self.to_learn, key=lambda x: x.version)  # the oldest first: it is the nearest to going stale
                self.to_learn.remove(b)
                if self.version - b.version > r.max_staleness:
                    self.counts["dropped_stale"] += 1
                    self.metrics.inc("srum_dropped_stale")
                    self.cursor.give_back(b.index)  # its prompts are generated again: dropped, never lost
                    continue
                self.learning = (self.learners.step(b.rollouts, b.judgements, self._sample_path(self.step + 1)), b)
            # wait for whatever finishes first
            pending = list(self.generating) + list(self.judging) + ([self.learning[0]] if self.learning else [])
            tw = time.perf_counter()
            ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)
            if self.learning is None:
                self.idle_s += time.perf_counter() - tw
            self._queues(generating=len(self.generating), to_judge=len(self.to_judge), judging=len(self.judging),
                         to_learn=len(self.to_learn) + (self.learning is not None))
            for ref in ready:
                if ref in self.generating:
                    aid, b = self.generating.pop(ref)
                    got = self._collect(self.gens, aid, ref, b)
                    if got == "ok":
                        self.counts["generated"] += 1
                        self.metrics.inc("srum_batches", event="generated")
                        self._count_sync(b.meta)
                        self.to_judge.append(b)
                    else:
                        self._reissue(b, aid if got == "died" else None)
                elif ref in self.judging:
                    aid, b = self.judging.pop(ref)
                    got = self._collect(self.judges, aid, ref, b)
                    if got == "ok":
                        self.counts["judged"] += 1
                        self.metrics.inc("srum_batches", event="judged")
                        self.to_learn.append(b)
                    else:  # judge it again on another judge: the rollouts are kept
                        if got == "died":
                            self._restarted("judge", aid, f"batch {b.index} goes to another judge")
                        self.to_judge.appendleft(b)
                else:
                    ref, b = self.learning
                    self.learning = None
                    try:
                        self._learned(ray.get(ref), b)
                        window.append((time.perf_counter(), self.idle_s))
                        if self.step % r.sync_every == 0:
                            weights = self._publish()
                        if self.step % c.checkpoint_every == 0 and self.step < c.steps:  # the last one follows the loop
                            self._checkpoint()
                    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                        weights = self._learner_died(e)
                        break
                    self._autoscale(window)
            if time.perf_counter() - last_health > 30:
                for group in (self.gens, self.judges):
                    for aid in group.check_health():
                        self._restarted(group.role, aid, "found dead by a health check")
                last_health = time.perf_counter()
        # stopping: the learner's current step is done (we only stop between steps); checkpoint there
        if self.stopping.is_set():
            if self.learning is not None:
                self._learned(ray.get(self.learning[0]), self.learning[1])
            # generated and not learned from (so generated == consumed + dropped_stale + abandoned_at_stop), apart
            # from generations still running, which were never generated
            self.counts["abandoned_at_stop"] = len(self.judging) + len(self.to_judge) + len(self.to_learn)
            self.counts["cancelled_at_stop"] = len(self.generating)
        self._checkpoint()
        self.metrics_file.close()
        self.ledger_file.close()
        self.trackers.close()
        elapsed = time.perf_counter() - self.t0
        summary = {"steps_done": self.step, "version": self.version, **self.counts, "seconds": round(elapsed, 3),
                   "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
                   "restarts": {"generator": self.gens.restarts, "judge": self.judges.restarts, "learner": self.learner_restarts},
                   "weight_sync": self.sync, "stopped": self.stopping.is_set()}
        return summary

    def _unfinished(self) -> int:
        """Batches issued and not yet learned or sent back: the staleness window counts them."""
        return len(self.generating) + len(self.to_judge) + len(self.judging) + len(self.to_learn) + (self.learning is not None)

    def _start_learners(self) -> None:
        """(Re)start the learner group from the run's newest checkpoint (or the initial model), and with it the
        data cursor, the counters' files and the weight transport."""
        self.learners = LearnerGroup(self.cfg_json, self.cfg.ray, str(self.dir))
        self.learner = self.learners.lead  # rank 0 speaks for the group: weights, version, checkpoints
        state = self.learners.resume()
        self.step = state["step"] if state else 0
        self.cursor = Cursor.from_state(state, self.cfg.rollout.prompts_per_step)
        self.version = ray.get(self.learner.version.remote())
        self.epoch += 1  # a new learner incarnation: workers reload whatever version it publishes
        for f in ("metrics_file", "ledger_file"):
            if getattr(self, f, None) is not None:
                getattr(self, f).close()
        # rows after the checkpoint are about to be learned again: drop them, so every step is listed once
        self.metrics_file = open_log(self.dir / "metrics.jsonl", self.step)
        self.ledger_file = open_log(self.dir / "ledger.jsonl", self.step)
        self._open_transport()

    def _learner_died(self, error: Exception) -> Published:
        """Back to the newest checkpoint with a fresh learner group, or stop (the same command resumes)."""
        self.learner_restarts += 1
        self.metrics.inc("srum_restarts", role="learner")
        where = latest_checkpoint(self.dir)
        if self.learner_restarts > self.cfg.ray.learner_restarts:
            raise RuntimeError(f"the learner died {self.learner_restarts} times (ray.learner_restarts "
                               f"{self.cfg.ray.learner_restarts}); stopped at {where or 'no checkpoint'}: run the same "
                               f"command to resume. Last error: {str(error)[-500:]}") from None
        print(f"srum: the learner died at step {self.step + 1} ({type(error).__name__}); going back to "
              f"{where.name if where else 'the initial model'} with a new learner", flush=True)
        # in-flight work belongs to the steps being undone: let it finish (its actors become idle) and forget it
        inflight = {**self.generating, **self.judging}
        if inflight:
            ray.wait(list(inflight), num_returns=len(inflight), timeout=120)
        for ref, (aid, b) in inflight.items():
            group = self.gens if ref in self.generating else self.judges
            if self._collect(group, aid, ref, b) == "died":
                self._restarted(group.role, aid, "while the learner was restarted")
        self.generating, self.judging = {}, {}
        self.to_judge.clear(), self.to_learn.clear()
        self._release_learners()
        self._start_learners()
        return self._publish()

    def _reissue(self, b: Batch, died: int | None) -> None:
        """Make batch `b` again: its generator `died` (an actor id), or what it read was lost."""
        self.cursor.give_back(b.index)
        self.counts["reissued"] += 1
        self.metrics.inc("srum_batches", event="reissued")
        if died is not None:
            self._restarted("generator", died, f"its batch {b.index} is re-issued")

    def _restarted(self, role: str, aid: int, what: str) -> None:
        """Record and say that an actor died and was replaced."""
        self.metrics.inc("srum_restarts", role=role)
        self.counts[f"restarts_{role}"] += 1
        print(f"srum: {role}-{aid} died; replaced by a new {role}; {what}", flush=True)

    def _checkpoint(self) -> None:
        ray.get(self.learner.checkpoint.remote(self.step, self.cursor.state()))

    # ---- helpers ----
    def _learned(self, m: dict, b: Batch) -> None:
        """Book one finished learner step: the data cursor, counters, a metrics row, a ledger row (the rollout
        ids the step used), the status history."""
        self.step += 1
        self.version = m["version"]
        self.counts["consumed"] += 1
        self.cursor.learned(b.index)
        self.ledger_file.write(json.dumps({"step": self.step, "batch": b.index, "generated_by": b.version,
                                           "ids": b.meta.get("ids", [])}) + "\n")
        self.ledger_file.flush()
        elapsed = time.perf_counter() - self.t0
        row = {"step": self.step, "t": round(elapsed, 4), **m, "staleness": self.version - 1 - b.version, "batch": b.index,
               "generators": self.gens.running, "judges": self.judges.running,
               "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
               **self.counts, "restarts_learner": self.learner_restarts,
               "generate_s": round(b.meta.get("generate_s", 0), 4), "judge_s": round(b.meta.get("judge_s", 0), 4)}
        self.metrics_file.write(json.dumps(row) + "\n")
        rec = self.metrics
        rec.inc("srum_batches", event="consumed")
        rec.set("srum_staleness", row["staleness"])
        rec.set("srum_policy_version", self.version)
        rec.set("srum_samples_per_second", row["samples_per_s"])
        rec.set("srum_idle_ratio", row["learner_idle_ratio"], stage="learn")
        self.metrics_file.flush()
        self.history.append({k: row[k] for k in HISTORY_KEYS})
        self.trackers.log(self.step, row)
        grid = self._sample_path(self.step)
        if grid and Path(grid).exists():  # the learner wrote it during the step
            self.trackers.image(self.step, "samples", Path(grid), f"step {self.step}: image | reward map | prompt, judge, oracle")

    def _samples(self) -> int:
        return self.counts["consumed"] * self.cfg.rollout.prompts_per_step * self.cfg.rollout.samples_per_prompt

    def _open_transport(self) -> None:
        """Pick the weight transport (srum/actors/weights.py); auto falls back to the object store."""
        r = self.cfg.ray
        self.transport = choose_transport(r.weights, sum(n["Alive"] for n in ray.nodes()))
        self.slots, self.slot_of = ring_slots(r.max_staleness), {}  # slot_of: version -> its ring slot
        self.members = None
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
            self.backend, self.group_epoch, self.members = "nccl" if on_gpu else "gloo", getattr(self, "group_epoch", 0), set()
            self.numel, self.store_address = ray.get([self.learner.weights_numel.remote(), self.learner.rendezvous.remote()])
        self.sync["transport"] = self.transport
        self.sync["broadcast_fallbacks"] = 0

    def _publish(self) -> Published:
        """Object store: one put per version (the learner's return value), not awaited: generators block on it
        only when they need it. Shared memory: one copy into a slot that no batch in flight reads (awaited:
        the copy must be whole before a generator reads it)."""
        self.counts["weight_versions"] += 1
        if self.transport == "object_store":
            return Published(self.version, ref=[self.learner.weights.remote()], epoch=self.epoch)
        if self.transport == "collective":
            return self._broadcast()
        versions = {b.version for _, b in self.generating.values()}
        if self.cfg.learner.judge_follows:
            versions |= {b.meta["judge_weights"] for _, b in self.judging.values()}
        in_use = {self.slot_of[v] for v in versions if v in self.slot_of}
        if self.slot_of:
            in_use.add(self.slot_of[max(self.slot_of)])  # the newest: batches about to be issued read it
        slot = free_slot(self.slots, in_use)
        self.slot_of = {v: s for v, s in self.slot_of.items() if s != slot}
        self.slot_of[self.version] = slot
        return ray.get(self.learner.write_slot.remote(slot, self.epoch))

    def _broadcast(self) -> Published:
        """Send the current version to every generator; first form a new group (epoch) if they changed.
        A broadcast that fails (a generator died in it) falls back to the object store for this version,
        and the group is formed again at the next publish."""
        gens = dict(self.gens.actors)
        if not gens:  # none started yet: the first one to start forms a group and gets this version then
            self.members = set()
            return Published(self.version, collective=True, epoch=self.epoch)
        try:
            if set(gens) != (self.members or set()):
                self.group_epoch, world = self.group_epoch + 1, len(gens) + 1
                joins = [a.join_broadcast.remote(self.store_address, self.group_epoch, i + 1, world, self.backend, self.numel)
                         for i, a in enumerate(gens.values())]
                ray.get([self.learner.join_broadcast.remote(self.group_epoch, world, self.backend), *joins], timeout=BROADCAST_TIMEOUT_S)
                self.members, self.sync["broadcast_epochs"] = set(gens), self.group_epoch
            ray.get([self.learner.broadcast_weights.remote(), *[a.receive.remote(self.version, self.epoch) for a in gens.values()]],
                    timeout=BROADCAST_TIMEOUT_S)
            return Published(self.version, collective=True, epoch=self.epoch)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            print(f"srum: broadcast of version {self.version} failed, sent over the object store: {str(e)[-1500:]}", flush=True)
            self.members = None  # formed again at the next publish; until then the object store serves
            self.sync["broadcast_fallbacks"] += 1
            return Published(self.version, ref=[self.learner.weights.remote()], epoch=self.epoch)

    def _queues(self, **depth: int) -> None:
        for stage, n in depth.items():
            self.metrics.set("srum_queue_depth", n, stage=stage)

    def _count_sync(self, meta: dict) -> None:
        if meta.get("sync_bytes"):
            self.sync["fetch_s"] += meta["sync_s"]
            self.sync["fetch_bytes"] += meta["sync_bytes"]
            self.sync["fetches"] += 1

    def _collect(self, group: ActorGroup, aid: int, ref, b: Batch) -> str:
        """Read a finished call's metadata. A dead actor is replaced; a call that failed because what it read is
        gone (the weights of a learner that died) leaves its actor as it is. Either way the batch is made again:
        "ok", "died" (replaced) or "lost" (its inputs were). Any other error in the call is a bug, and ends the run."""
        try:
            b.meta.update(ray.get(ref))
            group.release(aid)
            return "ok"
        except ray.exceptions.RayActorError:
            group.replace(aid)
            return "died"
        except ray.exceptions.RayTaskError as e:
            if not isinstance(e.cause, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
                raise
            group.release(aid)
            return "lost"

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
