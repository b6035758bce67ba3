"""The learner as a data-parallel group of `ray.learners` actors that act as one.

Each rank computes the loss on its equal share of every batch and the gradients are averaged with one
all-reduce (torch.distributed, gloo), so every rank takes the same step that a single learner would take
on the whole batch. Rank 0 speaks for the group: its metrics, its weights are published, it writes the
checkpoints; every rank resumes from the same checkpoint. Plain actors and a process group (as OpenRLHF
and verl build theirs) rather than a Ray Train trainer: the controller drives the learner one batch at a
time, which a trainer's own training loop would invert.
"""

from __future__ import annotations

import ray
from ray.util.placement_group import remove_placement_group

from ..config import RayConfig
from .group import actor_options, reserve, wait_placed
from .workers import LearnerActor


class LearnerGroup:
    def __init__(self, cfg_json: str, r: RayConfig, run_dir: str):
        n = r.learners
        self.pgs = [reserve(r.learner, r.placement) for _ in range(n)]
        for pg in self.pgs:  # a lost learner node: wait for its pool as long as a role may (ray.pool_wait_s)
            wait_placed("learner", r.learner, pg, timeout=r.pool_wait_s)
        self.actors = [LearnerActor.options(**actor_options(r.learner, pg)).remote(cfg_json, r.learner.threads, run_dir,
                                                                                  rank=i, world=n)
                       for i, pg in enumerate(self.pgs)]
        self.lead = self.actors[0]
        if n > 1:
            address = ray.get(self.lead.rendezvous.remote())
            ray.get([a.join.remote(address) for a in self.actors])  # together: init_process_group waits for all

    def resume(self) -> dict | None:
        return ray.get([a.resume.remote() for a in self.actors])[0]

    def step(self, rollouts, judgements, samples_at: int | None):
        """Every rank steps on the same batch (references: each fetches it zero-copy); rank 0's result stands
        for the group. A rank that fails leaves rank 0 waiting in the all-reduce until it times out, and the
        step fails: the run resumes from its last checkpoint, as with a single learner."""
        refs = [a.step.remote(rollouts, judgements, samples_at if i == 0 else None) for i, a in enumerate(self.actors)]
        return refs[0]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        for pg in self.pgs:
            if pg is not None:
                remove_placement_group(pg)
