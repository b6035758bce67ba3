"""The autoscale rule alone: grow while the learner starves, shrink while generators sit idle, within bounds; each
decision asks the cluster for the generators' resources (request_resources) and is counted."""

import ray.autoscaler.sdk as sdk

from srum.actors.autoscale import RolloutAutoscaler
from srum.config import RayConfig


class Counted:
    def __init__(self):
        self.counts = {}

    def touch(self, name, **labels):
        self.counts.setdefault((name, *labels.values()), 0)

    def inc(self, name, value=1, **labels):
        self.counts[(name, *labels.values())] = self.counts.get((name, *labels.values()), 0) + value


def steps(scaler, idle_per_step, idle_generators, want, n):
    """n learner steps one second apart, the learner idle `idle_per_step` s of each; the last decision, if any."""
    decided, idle_s = None, 0.0
    for _ in range(n):
        idle_s += idle_per_step
        got = scaler.after_step(idle_s, idle_generators, want)
        decided = got if got is not None else decided
    return decided


def test_grows_while_starving_shrinks_while_idle_within_bounds(monkeypatch):
    asked = []
    monkeypatch.setattr(sdk, "request_resources", lambda bundles: asked.append(bundles))
    r = RayConfig(autoscale=True, generators=1, max_generators=2, status_every=3,
                  generator={"num_cpus": 0.5, "resources": {"rollout_pool": 1}})
    clock = iter(range(1000))
    monkeypatch.setattr("srum.actors.autoscale.time.perf_counter", lambda: float(next(clock)))
    scaler = RolloutAutoscaler(r, Counted())
    assert steps(scaler, 0.9, 0, want=1, n=3) == 2  # the learner idle 90 %: one more generator
    assert asked[-1] == [{"CPU": 0.5, "rollout_pool": 1}] * 2
    assert steps(scaler, 0.9, 0, want=2, n=6) is None  # at max_generators
    assert steps(scaler, 0.0, 1, want=2, n=3) == 1  # never waiting, a generator idle throughout: one fewer
    assert steps(scaler, 0.0, 1, want=1, n=6) is None  # not below ray.generators
    assert [t["action"] for t in scaler.trace] == ["grow", "shrink"]
    assert scaler.metrics.counts[("srum_autoscale_decisions", "grow")] == 1
    scaler.release()
    assert asked[-1] == []  # withdrawn at the end ...
    n = len(asked)
    scaler.release()
    assert len(asked) == n  # ... once (the controller's finally calls it whatever ended the run)
    off = RolloutAutoscaler(RayConfig(), Counted())
    assert steps(off, 0.9, 0, want=1, n=20) is None  # ray.autoscale off: never
