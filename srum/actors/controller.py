"""The controller: a named actor that streams batches generator -> judge -> learner with bounded staleness,
publishes weights, checkpoints, watches the cluster's nodes, and answers `srum scale` / `stop` while it runs.

Bounded staleness, by construction: a new batch is issued only while at most `max_staleness` issued batches
are unfinished (not yet learned from or dropped), each generated with the newest published weights, so it is
learned from at most `max_staleness` versions after the one that made it (0: lock-step, the local engine's
order exactly). A batch that still lags by more (`sync_every` > 1, a re-issued batch) is dropped and counted.
The in-flight window also bounds memory, however the stages' speeds differ.

Data never passes through it: it hands object references on and reads each call's small metadata only.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from pathlib import Path

import ray

from ..config import TrainConfig
from ..learner.checkpoints import latest_checkpoint
from ..metrics import Recorder
from ..run import Budget, Run
from .autoscale import RolloutAutoscaler
from .cursor import Batch, Cursor
from .group import ActorGroup, collect, live_pids, stop_cause
from .learner_group import LearnerGroup
from .nodes import NodeWatch
from .placement import placement_table
from .weights import Published, open_publisher
from .workers import GeneratorActor, JudgeActor

HISTORY_KEYS = ("step", "version", "staleness", "generators", "judges", "global_reward", "local_reward", "total", "kl_term")
COUNTS = ("generated", "judged", "consumed", "dropped_stale", "reissued", "restarts_generator", "restarts_judge",
          "abandoned_at_stop", "cancelled_at_stop", "weight_versions", "nodes_lost")


@ray.remote(num_cpus=0, max_concurrency=4)
class Controller:
    def __init__(self, cfg_json: str, run_dir: str):
        self.cfg_json, self.cfg = cfg_json, TrainConfig.model_validate_json(cfg_json)
        self.run_dir = Run(self.cfg, Path(run_dir))
        self.want = {"generator": self.cfg.ray.generators, "judge": self.cfg.ray.judges}
        self.lock, self.stopping, self.finished = threading.Lock(), threading.Event(), threading.Event()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.step, self.version, self.result = 0, 0, None
        self.epoch, self.learner_restarts = 0, 0  # learner incarnations: a restarted learner is a new epoch
        self.sync, self.history = {"fetch_s": 0.0, "fetch_bytes": 0, "fetches": 0}, []
        self.gens = self.judges = self.learners = self.publisher = None
        self.metrics = Recorder("controller", self.cfg.ray.name)
        for name, role in (("srum_dropped_stale", None), *(("srum_restarts", r) for r in ("generator", "judge", "learner"))):
            self.metrics.touch(name, **({"role": role} if role else {}))  # restarts: by the role of the actors replaced

    # ---- called from outside while run() runs (other threads of this actor) ----
    def scale(self, generators: int | None = None, judges: int | None = None) -> dict:
        with self.lock:
            if generators is not None:
                self.want["generator"] = max(1, generators)
            if judges is not None:
                self.want["judge"] = max(1, judges)
        return self.status()

    def status(self) -> dict:
        g, j = self.gens, self.judges
        return {"step": self.step, "version": self.version, "want": dict(self.want),
                "generators": g.running if g else 0, "judges": j.running if j else 0,
                "pending": {"generator": len(g.pending) if g else 0, "judge": len(j.pending) if j else 0}, **self.counts,
                "history": self.history[-50:], "stopping": self.stopping.is_set(), "finished": self.finished.is_set()}

    def actor_pids(self) -> dict[str, list[int]]:
        """The process ids of the run's live actors by role, for fault injection (the dead ones left out)."""
        actors = {role: list(g.actors.values()) if g else [] for role, g in (("generator", self.gens), ("judge", self.judges))}
        actors["learner"] = list(self.learners.actors) if self.learners else []
        return {role: live_pids(group) for role, group in actors.items()}

    def stop(self, timeout: float = 60.0) -> dict | None:  # after the learner's current step; checkpointed
        self.stopping.set()
        self.finished.wait(timeout)
        return self.result

    # ---- the loop ----
    def run(self) -> dict:
        try:
            self.result = self._run()
            return self.result
        except Exception as e:  # a check that stops the run by name (issue 39): said, recorded, no checkpoint
            stop = stop_cause(e)
            if stop is None:
                raise
            self.run_dir.stopped(stop, self.step)
            raise stop from None
        finally:  # what the run asked the cluster for is withdrawn however it ends (a stop, a crash)
            if getattr(self, "autoscaler", None) is not None:
                self.autoscaler.release()
            for group in filter(None, (self.gens, self.judges)):
                group.shutdown()
            self._release_learners()
            self.finished.set()

    def _run(self) -> dict:
        c, r = self.cfg, self.cfg.ray
        self._start_learners()
        self.gens = ActorGroup("generator", GeneratorActor, (self.cfg_json, r.generator.threads), r.generator, r.placement)
        self.judges = ActorGroup("judge", JudgeActor, (self.cfg_json, r.judge.threads), r.judge, r.placement)
        self.gens.add(self.want["generator"])
        self.judges.add(self.want["judge"])
        # every actor up (models loaded) before the clock starts: start-up is not throughput
        ray.get([a.ping.remote() for a in [*self.gens.actors.values(), *self.judges.actors.values()]])
        placement_table({"generator": self.gens.actors.values(), "judge": self.judges.actors.values(),
                         "learner": self.learners.actors}, self.publisher.name, self.run_dir.dir, self.metrics)
        self.nodes, self.autoscaler = NodeWatch(self.metrics, r.pool_wait_s), RolloutAutoscaler(r, self.metrics)
        self.generating, self.judging = {}, {}  # meta ref -> (actor id, Batch)
        self.to_judge, self.to_learn, self.learning = deque(), deque(), None  # learning: (ref, Batch) in the learner
        self.weights = self._publish()
        self.clock, self.idle_s = Budget(0), 0.0
        while self.step < c.steps and not self.stopping.is_set():
            with self.lock:  # `srum scale` and the autoscale rule set `want`; the groups follow between batches
                want = dict(self.want)
            self.gens.resize(want["generator"])
            self.judges.resize(want["judge"])
            if self.publisher.stale(self.gens.actors):  # generators came or went: a new group, the current version again
                self.weights = self._publish()
            self._issue()
            self._send_to_judges()
            self._start_learning()
            for ref in self._wait():
                if ref in self.generating:
                    self._generated(*self.generating.pop(ref), ref)
                elif ref in self.judging:
                    self._judged(*self.judging.pop(ref), ref)
                elif not self._learned_step():
                    break  # the learner died: everything in flight was forgotten with it
            if (why := self.nodes.check([self.gens, self.judges], self._restarted)) is not None:  # a pool gone too long
                self.counts["stop_reason"] = why
                self.stopping.set()
            self.counts["nodes_lost"] = self.nodes.lost
        return self._finish()

    def _issue(self) -> None:
        """Issue generation to idle generators, within the staleness window."""
        c = self.cfg
        while self._unfinished() <= c.ray.max_staleness and self.step + self._unfinished() < c.steps:
            got = self.gens.take()
            if got is None:
                return
            aid, actor = got
            b = Batch(self.cursor.issue(), self.weights.version)
            meta_ref, b.rollouts = actor.generate.options(num_returns=2).remote(b.index, self.weights)
            self.generating[meta_ref] = (aid, b)

    def _send_to_judges(self) -> None:
        follows = self.cfg.learner.judge_follows
        while self.to_judge and (got := self.judges.take()) is not None:
            aid, actor = got
            b = self.to_judge.popleft()
            b.meta["judge_weights"] = self.weights.version  # the version a following judge reads
            meta_ref, b.judgements = actor.score.options(num_returns=2).remote(b.rollouts, self.weights if follows else None)
            self.judging[meta_ref] = (aid, b)

    def _start_learning(self) -> None:
        """Learn from the oldest scored batch (the nearest to going stale), or send it back to be made again."""
        while self.learning is None and self.to_learn:
            b = min(self.to_learn, key=lambda x: x.version)
            self.to_learn.remove(b)
            if self.version - b.version > self.cfg.ray.max_staleness:
                self.counts["dropped_stale"] += 1
                self.metrics.inc("srum_dropped_stale")
                self.cursor.give_back(b.index)  # its prompts are generated again: dropped, never lost
                continue
            samples_at = self.step + 1 if self.run_dir.sample_path(self.step + 1) else None
            self.learning = (self.learners.step(b.rollouts, b.judgements, samples_at), b)

    def _wait(self) -> list:
        """Whatever finishes first (within a second); the learner's idle time and the queue depths are booked."""
        pending = list(self.generating) + list(self.judging) + ([self.learning[0]] if self.learning else [])
        t = time.perf_counter()
        ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)
        if self.learning is None:
            self.idle_s += time.perf_counter() - t
        depth = {"generating": len(self.generating), "to_judge": len(self.to_judge), "judging": len(self.judging),
                 "to_learn": len(self.to_learn) + (self.learning is not None)}
        for stage, n in depth.items():
            self.metrics.set("srum_queue_depth", n, stage=stage)
        return ready

    def _generated(self, aid: int, b: Batch, ref) -> None:
        got = collect(self.gens, aid, ref, b.meta, b.rollouts)
        if got != "ok":
            return self._reissue(b, aid if got == "died" else None)
        self.counts["generated"] += 1
        self.metrics.inc("srum_batches", event="generated")
        if b.meta.get("sync_bytes"):
            self.sync["fetch_s"] += b.meta["sync_s"]
            self.sync["fetch_bytes"] += b.meta["sync_bytes"]
            self.sync["fetches"] += 1
        self.to_judge.append(b)

    def _judged(self, aid: int, b: Batch, ref) -> None:
        got = collect(self.judges, aid, ref, b.meta, b.judgements)
        if got == "ok":
            if b.meta.pop("judge_hung"):  # its call past reward.judge.timeout_s still runs in there: a fresh judge
                self.judges.replace(aid)
                self._restarted("judge", aid, f"batch {b.index}'s samples failed (reward.judge.timeout_s)", "hung")
            self.counts["judged"] += 1
            self.metrics.inc("srum_batches", event="judged")
            self.to_learn.append(b)
            return
        if got == "died":  # judge it again on another judge: the rollouts are kept
            self._restarted("judge", aid, f"batch {b.index} goes to another judge")
        self.to_judge.appendleft(b)

    def _learned_step(self) -> bool:
        """Book the learner's finished step, publish and checkpoint as due; False if the learner died."""
        (ref, b), self.learning = self.learning, None
        try:
            self._learned(ray.get(ref), b)
            if self.step % self.cfg.ray.sync_every == 0:
                self.weights = self._publish()
            if self.step % self.cfg.checkpoint_every == 0 and self.step < self.cfg.steps:  # the last one follows the loop
                self._checkpoint()
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            if stop_cause(e) is not None:  # the learner refused its step (non-finite numbers): stop, not restart
                raise
            self.weights = self._learner_died(e)
            return False
        if (want := self.autoscaler.after_step(self.idle_s, len(self.gens.idle), self.want["generator"])) is not None:
            with self.lock:
                self.want["generator"] = want
        return True

    def _finish(self) -> dict:
        """Checkpoint where the run stands (stopping: after the learner's current step) and summarise it."""
        if self.stopping.is_set():
            if self.learning is not None:
                self._learned(ray.get(self.learning[0]), self.learning[1])
            # generated == consumed + dropped_stale + abandoned_at_stop; generations still running were never generated
            self.counts["abandoned_at_stop"] = len(self.judging) + len(self.to_judge) + len(self.to_learn)
            self.counts["cancelled_at_stop"] = len(self.generating)
        self._checkpoint()
        self.run_dir.finish_logs()
        elapsed = self.clock.elapsed
        return {"steps_done": self.step, "version": self.version, **self.counts, "seconds": round(elapsed, 3),
                "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
                "restarts": {"generator": self.gens.restarts, "judge": self.judges.restarts, "learner": self.learner_restarts},
                "weight_sync": {**self.sync, "transport": self.publisher.name, **getattr(self.publisher, "stats", {})},
                "stopped": self.stopping.is_set(), "nodes": {"lost": self.nodes.lost, "joined": self.nodes.joined},
                "autoscale": self.autoscaler.trace}

    def _unfinished(self) -> int:  # batches issued and not yet learned or sent back: the staleness window counts them
        return len(self.generating) + len(self.to_judge) + len(self.judging) + len(self.to_learn) + (self.learning is not None)

    # ---- the learner: (re)started from the newest checkpoint ----
    def _start_learners(self) -> None:
        """(Re)start the learners from the newest checkpoint (or the initial model): cursor, logs, publisher too."""
        self.learners = LearnerGroup(self.cfg_json, self.cfg.ray, str(self.run_dir.dir))
        self.learner = self.learners.lead  # rank 0 speaks for the group: weights, version, checkpoints
        state = self.learners.resume()
        self.step = state["step"] if state else 0
        self.cursor = Cursor.from_state(state, self.cfg.rollout.prompts_per_step)
        self.version = ray.get(self.learner.version.remote())
        self.epoch += 1  # a new learner incarnation: workers reload whatever version it publishes
        self.run_dir.log_from(self.step)  # rows after the checkpoint are about to be learned again
        self.publisher = open_publisher(self.cfg, self.learner)

    def _release_learners(self) -> None:
        if self.learners is None:
            return
        if self.publisher is not None:
            self.publisher.close()
        self.learners.shutdown()
        self.learners = None

    def _learner_died(self, error: Exception) -> Published:
        """Back to the newest checkpoint with a fresh learner group, or stop (the same command resumes)."""
        self.learner_restarts += 1
        self.metrics.inc("srum_restarts", role="learner")
        where = latest_checkpoint(self.run_dir.dir)
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
            if collect(group, aid, ref, b.meta) == "died":
                self._restarted(group.role, aid, "while the learner was restarted")
        self.generating, self.judging = {}, {}
        self.to_judge.clear(), self.to_learn.clear()
        self._release_learners()
        self._start_learners()
        return self._publish()

    def _checkpoint(self) -> None:  # where the run stands: the learner's state and the data cursor
        ray.get(self.learner.checkpoint.remote(self.step, self.cursor.state()))

    def _publish(self) -> Published:
        """The current version to every generator; in use: the versions of batches in flight (never overwritten)."""
        self.counts["weight_versions"] += 1
        in_use = {b.version for _, b in self.generating.values()}
        if self.cfg.learner.judge_follows:
            in_use |= {b.meta["judge_weights"] for _, b in self.judging.values()}
        p = self.publisher.publish(self.version, self.epoch, in_use, dict(self.gens.actors))
        # with the digest of the weights it names, which every generator checks after it syncs (asked of the learner
        # after the publish call: its calls run in order, so both see one state)
        return dataclasses.replace(p, digest=ray.get(self.learner.weights_digest.remote()))

    def _learned(self, m: dict, b: Batch) -> None:
        """Book one learner step: cursor, counters, the run's rows (metrics, ledger, trackers), history, gauges."""
        self.step += 1
        self.version = m["version"]
        self.counts["consumed"] += 1
        self.cursor.learned(b.index)
        elapsed = self.clock.elapsed
        row = {"step": self.step, "t": round(elapsed, 4), **m, "staleness": self.version - 1 - b.version, "batch": b.index,
               "generators": self.gens.running, "judges": self.judges.running,
               "samples_per_s": round(self._samples() / elapsed, 3), "learner_idle_ratio": round(self.idle_s / elapsed, 4),
               **self.counts, "restarts_learner": self.learner_restarts,
               "generate_s": round(b.meta.get("generate_s", 0), 4), "judge_s": round(b.meta.get("judge_s", 0), 4)}
        self.run_dir.record(self.step, row, {"batch": b.index, "generated_by": b.version, "ids": b.meta.get("ids", [])})
        self.run_dir.checks(self.step, row)  # a judge failing too often, a logprob gap: the run stops (StopRun)
        self.history.append({k: row[k] for k in HISTORY_KEYS})
        self.metrics.inc("srum_batches", event="consumed")
        for name, value in (("srum_staleness", row["staleness"]), ("srum_policy_version", self.version),
                            ("srum_samples_per_second", row["samples_per_s"])):
            self.metrics.set(name, value)
        self.metrics.set("srum_idle_ratio", row["learner_idle_ratio"], stage="learn")

    def _samples(self) -> int:
        return self.counts["consumed"] * self.cfg.rollout.prompts_per_step * self.cfg.rollout.samples_per_prompt

    # ---- actors that fail, and the group's size ----
    def _reissue(self, b: Batch, died: int | None) -> None:  # its generator `died` (an id), or what it read was lost
        self.cursor.give_back(b.index)
        self.counts["reissued"] += 1
        self.metrics.inc("srum_batches", event="reissued")
        if died is not None:
            self._restarted("generator", died, f"its batch {b.index} is re-issued")

    def _restarted(self, role: str, aid: int, what: str, how: str = "died") -> None:  # replaced: count, say
        self.metrics.inc("srum_restarts", role=role)
        self.counts[f"restarts_{role}"] += 1
        print(f"srum: {role}-{aid} {how}; replaced by a new {role}; {what}", flush=True)
