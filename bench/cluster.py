"""srum on a real 3-node Ray cluster on this machine (a head and two worker raylets, `ray start`, in a network and
process namespace of their own: loopback only): the placement table of pinned role pools, the rollout node
SIGKILLed mid-run and started again, and the learner's node lost with a second node in its pool (resume from the
newest checkpoint; in lock-step the final weights equal an uninterrupted run's); Prometheus and `srum status` after
the loss; rollout workers from Ray's autoscaler (fake multi-node provider). Writes docs/results/cluster.{json,md}.

    python bench/cluster.py [--steps 20]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from common import md_table, write

from srum.testing.cluster import LocalCluster, fake_provider, in_private_netns, reexec_in_netns, train_autoscaled, train_through_node_loss
from srum.testing.prometheus import Prometheus, srum_status

SMALL = ["rollout.prompts_per_step=2", "rollout.samples_per_prompt=2", "eval.at_start=false", "eval.at_end=false",
         "checkpoint_every=4", "ray.generator.num_cpus=0.5", "ray.judge.num_cpus=0.5", "ray.learner.num_cpus=0.5",
         "ray.judge.resources={judge_pool: 1}", "ray.learner.resources={learner_pool: 1}"]


def weights_sha(run: Path, steps: int) -> str:
    return hashlib.sha256((run / "checkpoints" / f"step_{steps:06d}" / "model" / "model.safetensors").read_bytes()).hexdigest()


def rollout_node_lost(out: Path, steps: int) -> dict:
    c = LocalCluster({"judge_pool": 1, "learner_pool": 1})
    try:
        c.add("rollout", {"rollout_pool": 2})
        c.add("spare", {"judge_pool": 1})
        prom, t0 = Prometheus(c.metrics_targets(), out / "prometheus"), time.time()
        try:
            sets = [f"steps={steps}", *SMALL, "ray.generators=2", "ray.generator.resources={rollout_pool: 1}"]
            res = train_through_node_loss(c, out / "rollout", sets, "rollout", kill_at_step=steps // 3, down_s=10)
            res["prometheus"] = prom.node_loss(t0, res["killed_at_time"])
        finally:
            prom.stop()
        return {**res, "srum_status": srum_status(out / "rollout", c.env), "listen_addresses": c.listeners()}
    finally:
        c.stop()


def learner_node_lost(out: Path, steps: int) -> dict:
    """Lock-step (max_staleness 0): the learner's node killed, the learner back on the other node of its pool from
    the newest checkpoint; the final weights against an uninterrupted run's on the same cluster."""
    c = LocalCluster({"judge_pool": 1})
    try:
        c.add("learner", {"learner_pool": 1})
        c.add("rollout", {"rollout_pool": 2, "learner_pool": 1})
        sets = [f"steps={steps}", *SMALL, "ray.max_staleness=0", "ray.generator.resources={rollout_pool: 1}"]
        straight = train_through_node_loss(c, out / "straight", sets, "learner", kill_at_step=steps + 1, down_s=0)
        lost = train_through_node_loss(c, out / "learner", sets, "role:learner", kill_at_step=steps // 2, down_s=10)
        lost["weights_equal_uninterrupted"] = weights_sha(out / "learner", steps) == weights_sha(out / "straight", steps)
        lost["uninterrupted_seconds"] = straight["seconds"]
        return lost
    finally:
        c.stop()


def autoscaled(out: Path, steps: int) -> dict:
    """One generator and a starving learner: Ray's autoscaler adds a rollout node for a second, then takes it back."""
    head = {"judge_pool": 1, "learner_pool": 1, "rollout_pool": 1}
    rollout = {"resources": {"CPU": 1, "rollout_pool": 1, "object_store_memory": 200 << 20}, "max_workers": 2}
    c = LocalCluster(head, autoscaling=fake_provider({"CPU": 2, **head}, {"rollout": rollout}, idle_timeout_min=0.2))
    try:
        sets = [f"steps={steps}", *SMALL, "ray.generators=1", "ray.max_generators=2", "ray.autoscale=true",
                "ray.status_every=3", "ray.generator.resources={rollout_pool: 1}"]
        return train_autoscaled(c, out / "autoscaled", sets, "rollout_pool")
    finally:
        c.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("/tmp/srum-cluster-bench"))
    args = p.parse_args()
    if not in_private_netns():
        return reexec_in_netns([__file__, *sys.argv[1:]])
    res = {"rollout_node_lost": rollout_node_lost(args.out, args.steps), "learner_node_lost": learner_node_lost(args.out, args.steps)}
    rows = [[name, r["killed_at_step"], r["steps"], f"{r['unique_ids']} / {r['rollout_ids']}",
             r["summary"].get("nodes", {}).get("lost"), r["summary"].get("restarts"), r["seconds"],
             r.get("weights_equal_uninterrupted", "")] for name, r in res.items()]
    res["autoscaled"] = auto = autoscaled(args.out, args.steps + 10)
    placement = [[a["role"], a["node_id"][:12]] for a in res["rollout_node_lost"]["placement"]["actors"]]
    prom = res["rollout_node_lost"]["prometheus"]
    trace = [[r["t"], r["request"], r["nodes"], f"{r['pool_in_use']:g} / {r['pool']:g}", r["step"], r["generators"],
              r["learner_idle_share"]] for r in auto["trace"]]
    md = ["# srum on a 3-node Ray cluster, and on an autoscaling one (one machine, loopback only)", "",
          f"`python bench/cluster.py --steps {args.steps}`", "", *md_table(["run", "killed at step", "steps", "unique / "
          "rollout ids", "nodes lost", "restarts", "seconds", "weights = uninterrupted"], rows), "", "Placement at start "
          "(rollout_node_lost):", "", *md_table(["role", "node"], placement), "", "Prometheus (scraping every node each "
          "second) after the rollout node's loss:", "", *md_table(["ray_srum_nodes_lost_total", "ray_srum_restarts_total",
          "nodes lost read 1 (s after the kill)", "lowest `up` by target"], [[prom["nodes_lost"], prom["restarts"],
          prom["nodes_lost_seen_after_kill_s"], prom["lowest_up"]]]), "", "`srum status` of that run:", "", "```",
          res["rollout_node_lost"]["srum_status"], "```", "", f"Autoscaled ({auto['steps']} steps, {auto['unique_ids']} / "
          f"{auto['rollout_ids']} rollout ids unique; nodes {auto['nodes_start']} -> {auto['nodes_max']} -> "
          f"{auto['nodes_end']}), a row per change:", "", *md_table(["t (s)", "request (rollout bundles)", "nodes",
          "rollout_pool in use / total", "step", "generators", "learner idle share (last 3 steps)"], trace), ""]
    write("cluster", res, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
