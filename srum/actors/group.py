"""A fault-tolerant group of actors of one role (RLlib's actor-manager idea, kept small).

Each actor gets its own placement group of one bundle ({CPU: c, GPU: g}); with whole GPUs per
bundle no two actors ever share a device, so generators and judges land on different GPUs. The group
knows which actors are idle, adds and removes them at run time (a busy actor being removed finishes
its batch first, so nothing it produced is lost), and replaces dead ones.
"""

from __future__ import annotations

import itertools
import re

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ..config import ActorResources
from ..io import StopRun

PLACEMENT_TIMEOUT_S = 120


class PlacementError(RuntimeError):
    pass


def bundle(res: ActorResources) -> dict[str, float]:
    """What one actor of a role reserves: its CPUs and GPUs, and its pool's custom resources (which nodes it may use)."""
    b = {"CPU": res.num_cpus, "GPU": res.num_gpus, **res.resources}
    return {k: v for k, v in b.items() if v > 0} or {"CPU": 0.01}


def reserve(res: ActorResources, use_placement: bool):
    """A placement group of one bundle for one actor (None without placement)."""
    return placement_group([bundle(res)], strategy="PACK") if use_placement else None


def actor_options(res: ActorResources, pg) -> dict:
    opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, **({"resources": dict(res.resources)} if res.resources else {})}
    if pg is not None:
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    return opts


def wait_placed(role: str, res: ActorResources, pg, timeout: float = PLACEMENT_TIMEOUT_S) -> None:
    if pg is None:
        return
    ready, _ = ray.wait([pg.ready()], timeout=timeout)
    if not ready:
        remove_placement_group(pg)
        raise PlacementError(f"could not place a {role} actor needing {bundle(res)} within {timeout:.0f} s; "
                             f"cluster has {ray.available_resources()} available (see ray.{role} in the config)")


class ActorGroup:
    def __init__(self, role: str, actor_cls, args: tuple, res: ActorResources, use_placement: bool = True):
        self.role, self.cls, self.args, self.res, self.use_placement = role, actor_cls, args, res, use_placement
        self.actors: dict[int, object] = {}
        self.pgs: dict[int, object] = {}
        self.idle: list[int] = []
        self.retiring: set[int] = set()
        self.pending: list = []  # placement groups reserved for actors not started yet
        self.restarts = 0
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self.actors) - len(self.retiring) + len(self.pending)

    @property
    def running(self) -> int:
        return len(self.actors) - len(self.retiring)

    def add(self, n: int = 1, wait: bool = True) -> None:
        """Reserve and start n actors. With wait=False (scaling at run time) an actor whose placement the
        cluster cannot satisfy yet stays pending, and the loop goes on; `poll` starts it once placed."""
        for _ in range(n):
            pg = reserve(self.res, self.use_placement)
            if wait:  # placed: start it now (a fresh pg.ready() polled with timeout 0 may not have resolved yet)
                wait_placed(self.role, self.res, pg)
                self._start(pg)
            else:
                self.pending.append(pg)
        self.poll()

    def nodes(self) -> set[str] | None:
        """The nodes its actors' placement groups hold; None (unknown) when an actor runs without one."""
        if any(pg is None for pg in self.pgs.values()):
            return None
        return {n for pg in self.pgs.values() for n in placement_group_table(pg).get("bundles_to_node_id", {}).values()}

    def poll(self) -> None:
        """Start the actors whose placement groups are ready."""
        for pg in list(self.pending):
            if pg is not None and not ray.wait([pg.ready()], timeout=0)[0]:
                continue
            self.pending.remove(pg)
            self._start(pg)

    def _start(self, pg) -> None:
        aid = next(self._ids)
        self.actors[aid] = self.cls.options(**actor_options(self.res, pg)).remote(*self.args, f"{self.role}-{aid}")
        self.pgs[aid] = pg
        self.idle.append(aid)

    def remove(self, n: int = 1) -> None:
        """Retire n actors: idle ones go now, busy ones when their current call returns."""
        for _ in range(min(n, len(self))):
            if self.pending:
                pg = self.pending.pop()
                if pg is not None:
                    remove_placement_group(pg)
            elif self.idle:
                self._kill(self.idle.pop())
            else:
                busy = [a for a in self.actors if a not in self.retiring]
                self.retiring.add(busy[-1])

    def resize(self, n: int, wait: bool = False) -> None:
        self.poll()
        if n > len(self):
            self.add(n - len(self), wait)
        elif n < len(self):
            self.remove(len(self) - n)

    def take(self) -> tuple[int, object] | None:
        """An idle actor (oldest first), marked busy."""
        if not self.idle:
            return None
        aid = self.idle.pop(0)
        return aid, self.actors[aid]

    def release(self, aid: int) -> None:
        """Its call returned: back to idle, or gone if it was retiring."""
        if aid in self.retiring:
            self.retiring.discard(aid)
            self._kill(aid)
        elif aid in self.actors:
            self.idle.append(aid)

    def replace(self, aid: int) -> None:
        """A dead actor: drop it and start a fresh one (which loads current weights before producing)."""
        retiring = aid in self.retiring
        self.retiring.discard(aid)
        self._kill(aid)
        self.restarts += 1
        if not retiring:
            self.add(1, wait=False)

    def check_health(self, timeout: float = 30.0) -> list[int]:
        """Ping the idle actors; replace any that do not answer. Returns the ids replaced."""
        dead = []
        for aid in list(self.idle):
            try:
                ray.get(self.actors[aid].ping.remote(), timeout=timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self.idle.remove(aid)
                dead.append(aid)
        for aid in dead:
            self.replace(aid)
        return dead

    def shutdown(self) -> None:
        for aid in list(self.actors):
            self._kill(aid)
        for pg in self.pending:
            if pg is not None:
                remove_placement_group(pg)
        self.pending.clear()

    def _kill(self, aid: int) -> None:
        actor = self.actors.pop(aid, None)
        if aid in self.idle:
            self.idle.remove(aid)
        if actor is not None:
            ray.kill(actor, no_restart=True)
        pg = self.pgs.pop(aid, None)
        if pg is not None:
            remove_placement_group(pg)


def collect(group: ActorGroup, aid: int, ref, meta: dict, data=None) -> str:
    """Read a finished call's metadata. A dead actor is replaced; a call that failed because what it read is
    gone (the weights of a learner that died) leaves its actor as it is. Either way the batch is made again:
    "ok", "died" (replaced) or "lost" (its inputs were). Any other error in the call is a bug, and ends the run.
    `data`: the call's other return, whose error is read here too, so Ray does not log it as unhandled."""
    try:
        meta.update(ray.get(ref))
        group.release(aid)
        return "ok"
    except ray.exceptions.RayActorError:
        group.replace(aid)
        _forget(data)
        return "died"
    except ray.exceptions.RayTaskError as e:
        if not isinstance(e.cause, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
            raise
        group.release(aid)
        _forget(data)
        return "lost"


def _forget(ref) -> None:
    if ref is not None:
        try:
            ray.get(ref, timeout=0)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            pass


def live_pids(actors: list, timeout: float = 30.0) -> list[int]:
    pids = []
    for ref in [a.pid.remote() for a in actors]:
        try:
            pids.append(ray.get(ref, timeout=timeout))
        except ray.exceptions.RayActorError:
            pass  # dead: the loop replaces it on its next call
    return pids


def stop_cause(e: BaseException) -> StopRun | None:
    """The StopRun an actor raised (inside Ray's RayTaskError), or None for any other error."""
    # Ray's RayTaskError(StopRun) is an instance of both: look inside it first
    cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
    if not isinstance(cause, StopRun):
        return None
    # Ray's copy carries the remote traceback in its text: keep the check's own words (its last line, unprefixed)
    last = str(getattr(cause, "message", cause)).rstrip().splitlines()[-1]
    return StopRun(cause.reason, re.sub(r"^(?:[\w.]+(?:Error|StopRun)(?:\(\w+\))?: )+", "", last), cause.step)
