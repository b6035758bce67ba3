"""Rollout workers that follow the learner's appetite (`ray.autoscale`): one more generator while the learner starves
(its idle share over a window above `autoscale_idle`), one fewer while generators sit idle and the learner does not
wait, between `ray.generators` and `ray.max_generators`. Each decision asks the cluster for the generators' resources
(`ray.autoscaler.sdk.request_resources`, which KubeRay's autoscaler answers with nodes of the generators' pool, and
withdraws it when they shrink), and is a log line and a metric."""

from __future__ import annotations

import time
from collections import deque

from .group import bundle


class RolloutAutoscaler:
    def __init__(self, r, metrics):
        self.r, self.metrics = r, metrics
        self.window: deque = deque(maxlen=max(1, r.status_every))  # (time, learner idle seconds, idle generators)
        self.trace: list[dict] = []
        self.asked = False  # a request_resources is standing
        metrics.touch("srum_autoscale_decisions", action="grow")
        metrics.touch("srum_autoscale_decisions", action="shrink")

    def after_step(self, idle_s: float, idle_generators: int, want: int) -> int | None:
        """The generators wanted after this learner step, if that changes."""
        if not self.r.autoscale:
            return None
        self.window.append((time.perf_counter(), idle_s, idle_generators))
        if len(self.window) < self.window.maxlen:
            return None
        (t_a, idle_a, _), (t_b, idle_b, _) = self.window[0], self.window[-1]
        starving = (idle_b - idle_a) / max(t_b - t_a, 1e-9)
        spare = min(g for _, _, g in self.window)  # generators idle at every step of the window
        if starving > self.r.autoscale_idle and want < self.r.max_generators:
            return self._decide("grow", want + 1, starving, spare)
        if spare >= 1 and starving < self.r.autoscale_idle / 3 and want > self.r.generators:
            return self._decide("shrink", want - 1, starving, spare)
        return None

    def _decide(self, action: str, want: int, starving: float, spare: int) -> int:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[bundle(self.r.generator)] * want)
        self.asked = True
        self.metrics.inc("srum_autoscale_decisions", action=action)
        self.trace.append({"t": round(time.time(), 1), "action": action, "generators": want,
                           "learner_idle_share": round(starving, 3), "idle_generators": spare})
        print(f"srum: autoscale: {action} to {want} generators (learner idle {starving:.0%} of the last "
              f"{len(self.window)} steps, {spare} generators idle throughout); asked the cluster for their resources",
              flush=True)
        self.window.clear()
        return want

    def release(self) -> None:
        """The run is over (finished, stopped or failed): withdraw what it asked the cluster for, once."""
        if self.asked:
            self.asked = False
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])
            self.trace.append({"t": round(time.time(), 1), "action": "release", "generators": 0})
            print("srum: autoscale: the run is over; withdrew its request for the generators' resources", flush=True)
