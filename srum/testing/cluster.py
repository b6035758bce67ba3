"""A multi-node Ray cluster on one machine, for the cluster bench and tests: a head and worker raylets started with
`ray start`, each its own node with its own resources (role pools), nodes killed and started again by name.

Ray's cluster mode listens on every interface, so this runs only inside a network namespace of its own whose only
interface is loopback (`unshare -n`, then `ip link set lo up`): nothing can reach it and nothing leaves it. A PID
namespace too (`-p -f --mount-proc`), so `ray stop` and the kills see only this cluster's processes, never another
Ray instance on the machine. `in_private_netns` says whether the calling process is in one; `reexec_in_netns` (and
`UNSHARE`) re-run a command there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_PORT = 6390
UNSHARE = ["unshare", "-n", "-p", "-f", "--mount-proc"]  # own network (loopback only) and process namespaces


def in_private_netns() -> bool:
    """True when loopback is this network namespace's only interface (/proc/net/dev is per namespace; sysfs is not)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def reexec_in_netns(argv: list[str]) -> int:
    """Run `argv` (a Python script and its arguments) in a new network namespace with only loopback up."""
    script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in [sys.executable, *argv])
    return subprocess.run([*UNSHARE, "bash", "-c", script]).returncode


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment every node, driver and `ray` call of the cluster shares (token auth: one token file)."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
               RAY_ADDRESS=f"127.0.0.1:{HEAD_PORT}", PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return {**env, **extra}


class LocalCluster:
    """A head (`head_resources`) and named worker nodes, each with distinct ports (node i: 23100 + 100 i, ...)."""

    def __init__(self, head_resources: dict[str, float], num_cpus: int = 2, temp_dir: Path | None = None):
        if not in_private_netns():
            raise RuntimeError("LocalCluster runs only inside a private network namespace (unshare -n): Ray's "
                               "cluster mode listens on every interface")
        self.temp = Path(temp_dir or tempfile.mkdtemp(prefix="srum-cluster-"))
        self.num_cpus, self.env, self.nodes = num_cpus, cluster_env(), {}
        self._ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={HEAD_PORT}", f"--num-cpus={num_cpus}",
                  "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp / 'ray'}",
                  f"--resources={json.dumps(head_resources)}")

    def add(self, name: str, resources: dict[str, float]) -> None:
        """Start worker node `name` (again, after `kill`, with the same ports and resources)."""
        i = self.nodes.get(name, {}).get("index", len(self.nodes) + 1)
        base = 23000 + 100 * i
        ports = {"node-manager-port": base, "object-manager-port": base + 1, "metrics-export-port": base + 2,
                 "dashboard-agent-listen-port": base + 3, "dashboard-agent-grpc-port": base + 4,
                 "runtime-env-agent-port": base + 5, "min-worker-port": 30000 + 1000 * i, "max-worker-port": 30999 + 1000 * i}
        self._ray("start", f"--address=127.0.0.1:{HEAD_PORT}", "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
                  f"--resources={json.dumps(resources)}", *(f"--{k}={v}" for k, v in ports.items()))
        self.nodes[name] = {"index": i, "resources": resources, "port": base}

    def kill(self, name: str) -> list[int]:
        """SIGKILL node `name`'s raylet and every process it started (its workers, its agents): a node lost."""
        port = self.nodes[name]["port"]
        raylet = [int(p) for p in _pgrep(f"node_manager_port={port}")]
        victims = set(raylet)
        for pid in raylet:
            victims |= _descendants(pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(victims)

    def wait_nodes(self, alive: int, timeout: float = 60.0) -> None:
        """Until the cluster counts `alive` live nodes (a killed node takes Ray a few seconds to declare dead)."""
        probe = "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"
        t = time.time()
        while time.time() - t < timeout:
            out = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True)
            if out.stdout.strip().splitlines()[-1:] == [str(alive)]:
                return
            time.sleep(1)
        raise TimeoutError(f"the cluster did not reach {alive} live nodes in {timeout:.0f} s")

    def listeners(self) -> list[str]:
        """The addresses every listening TCP socket of this namespace is bound to (all loopback, by construction)."""
        out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()
        return sorted({line.split()[3].rsplit(":", 1)[0] for line in out if line.strip()})

    def stop(self) -> None:
        """Every Ray process of this PID namespace: this cluster's only."""
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=self.env, capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)

    def _ray(self, *args: str) -> None:
        out = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"ray {' '.join(args[:2])} failed: {(out.stdout + out.stderr)[-2000:]}")


def _pgrep(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = {int(p) for p in out}
    for k in list(kids):
        kids |= _descendants(k)
    return kids


def train_through_node_loss(cluster: LocalCluster, run_dir: Path, sets: list[str], node: str, kill_at_step: int,
                            down_s: float, timeout: float = 900.0) -> dict:
    """`srum train --engine ray` on the cluster; node `node` killed once `kill_at_step` steps are learned and started
    again `down_s` seconds later. Returns the run's summary and what its ledger says: every rollout id learned once?"""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "srum"), "train", "--engine", "ray", "--out", str(run_dir),
           *[a for s in sets for a in ("--set", s)]]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    proc = subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    t0, killed_at = time.time(), None
    while proc.poll() is None and time.time() - t0 < timeout:
        steps = _lines(run_dir / "metrics.jsonl")
        if killed_at is None and steps >= kill_at_step:
            killed_at, victims = steps, cluster.kill(node)
            t_kill = time.time()
        if killed_at is not None and t_kill and time.time() - t_kill > down_s:
            cluster.add(node, cluster.nodes[node]["resources"])
            t_kill = 0
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        raise TimeoutError(f"srum train did not finish in {timeout:.0f} s (log: {log.name})")
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    ids = [i for row in ledger for i in row["ids"]]
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    return {"returncode": proc.returncode, "killed_at_step": killed_at, "processes_killed": len(victims) if killed_at else 0,
            "steps": len(ledger), "rollout_ids": len(ids), "unique_ids": len(set(ids)), "seconds": round(time.time() - t0, 1),
            "summary": results.get("ray", {}), "placement": json.loads((run_dir / "placement.json").read_text())}


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0
