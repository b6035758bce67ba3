"""srum on a real two-node Ray cluster (`ray start` twice, in a private network namespace): generators pinned to the
worker node's pool, the worker node SIGKILLed mid-run and started again; the run finishes with every rollout id
learned once, and says that it lost a node."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from srum.testing.cluster import UNSHARE

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
import json, sys
from pathlib import Path
from srum.testing.cluster import LocalCluster, train_through_node_loss
out = Path(sys.argv[1])
c = LocalCluster({"judge_pool": 1, "learner_pool": 1})  # its own short temp dir: Ray socket paths are short
try:
    c.add("rollout", {"rollout_pool": 2})
    sets = ["steps=10", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2", "eval.at_start=false",
            "eval.at_end=false", "checkpoint_every=4", "ray.generators=2", "ray.generator.resources={rollout_pool: 1}",
            "ray.judge.resources={judge_pool: 1}", "ray.learner.resources={learner_pool: 1}",
            "ray.generator.num_cpus=0.5", "ray.judge.num_cpus=0.5", "ray.learner.num_cpus=0.5"]
    r = train_through_node_loss(c, out / "run", sets, "rollout", kill_at_step=3, down_s=5)
    (out / "result.json").write_text(json.dumps(r))
finally:
    c.stop()
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_a_worker_node_lost_mid_run(tmp_path):
    script = "ip link set lo up && exec " + f"'{sys.executable}' -c '{SCENARIO}' '{tmp_path}'"
    out = subprocess.run([*UNSHARE, "bash", "-c", script], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    log = (tmp_path / "run.log").read_text()
    assert r["returncode"] == 0, log[-3000:]
    assert r["killed_at_step"] is not None and r["processes_killed"] > 0
    assert r["steps"] == 10 and r["unique_ids"] == r["rollout_ids"] == 40  # every rollout id learned once
    assert r["summary"]["nodes"]["lost"] >= 1 and "lost; its actors are replaced" in log
    roles = {a["role"]: a["node_id"] for a in r["placement"]["actors"]}
    assert roles["generator"] != roles["learner"] == roles["judge"]  # the pools: generators on the worker node
