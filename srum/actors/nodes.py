"""The cluster's nodes as the run sees them: a node lost or joined is said, counted and exported, and a role whose
every actor is gone waits for its pool to come back for at most `ray.pool_wait_s`."""

from __future__ import annotations

import time

import ray

CHECK_EVERY_S = 2.0
HEALTH_EVERY_S = 30.0


class NodeWatch:
    def __init__(self, metrics, pool_wait_s: float):
        self.metrics, self.pool_wait_s = metrics, pool_wait_s
        self.alive = self._alive()
        self.lost, self.joined, self.last, self.last_health = 0, 0, time.perf_counter(), time.perf_counter()
        self.waiting: dict[str, float] = {}  # role -> since when none of its actors runs
        self.hosted: set[str] | None = None  # nodes holding the groups' placement groups at the last check
        metrics.touch("srum_nodes_lost")

    @staticmethod
    def _alive() -> dict[str, str]:
        return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    def check(self, groups: list, restarted) -> str | None:
        """Every CHECK_EVERY_S: say which nodes left or joined; a reason to stop if a role waited too long. Every
        HEALTH_EVERY_S: ping the groups' idle actors, replacing (and telling `restarted`) any that do not answer."""
        if time.perf_counter() - self.last_health > HEALTH_EVERY_S:
            for group in groups:
                for aid in group.check_health():
                    restarted(group.role, aid, "found dead by a health check")
            self.last_health = time.perf_counter()
        if time.perf_counter() - self.last < CHECK_EVERY_S:
            return None
        self.last = time.perf_counter()
        now = self._alive()
        gone = self.alive.keys() - now.keys()
        # A node given back idle is no loss: Ray's DeathReason 4 (the autoscaler draining an idle node), or 1 (an
        # expected termination: the v1 autoscaler's SIGTERM) of a node that held none of the run's placement groups
        # when last seen. A SIGTERM'd node that held actors (a pod evicted, a spot node reclaimed) is lost.
        why = {n["NodeID"]: n.get("DeathReasonMessage") for n in (ray.nodes() if gone else []) if n["NodeID"] in gone and
               (n.get("DeathReason") == 4 or (n.get("DeathReason") == 1 and self.hosted is not None and n["NodeID"] not in self.hosted))}
        for node in gone:
            if node in why:
                print(f"srum: node {node[:12]} ({self.alive[node]}) left: {why[node] or 'stopped on purpose'}", flush=True)
                continue
            self.lost += 1
            self.metrics.inc("srum_nodes_lost")
            print(f"srum: node {node[:12]} ({self.alive[node]}) lost; its actors are replaced on nodes that have "
                  "their pool's resources, and their batches re-issued", flush=True)
        for node in now.keys() - self.alive.keys():
            self.joined += 1
            print(f"srum: node {node[:12]} ({now[node]}) joined", flush=True)
        self.alive = now
        held = [g.nodes() for g in groups]
        self.hosted = None if None in held else set().union(*held)
        return self._starved(groups)

    def _starved(self, groups: list) -> str | None:
        for g in groups:
            if g.running or not g.pending:
                self.waiting.pop(g.role, None)
                continue
            since = self.waiting.setdefault(g.role, time.perf_counter())
            waited = time.perf_counter() - since
            if waited > self.pool_wait_s:
                return (f"no {g.role} could be placed for {waited:.0f} s (ray.pool_wait_s {self.pool_wait_s:g}): the "
                        f"cluster has no node with {dict(g.res.resources) or 'the resources'} for ray.{g.role}; "
                        "checkpointed: run the same command to resume once the pool is back")
            if int(waited) % 30 == 0:
                print(f"srum: waiting for a node of the {g.role} pool ({waited:.0f} s of {self.pool_wait_s:g})", flush=True)
        return None
