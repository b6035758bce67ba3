"""A multi-node Ray cluster on one machine, for the cluster bench and tests: a head and worker raylets started with
`ray start`, each its own node with its own resources (role pools), nodes killed and started again by name.

Ray's cluster mode listens on every interface, so this runs only inside a network namespace of its own whose only
interface is loopback (`unshare -n`, then `ip link set lo up`): nothing can reach it and nothing leaves it. A PID
namespace too (`-p -f --mount-proc`), so `ray stop` and the kills see only this cluster's processes, never another
Ray instance on the machine. `in_private_netns` says whether the calling process is in one; `reexec_in_netns` (and
`UNSHARE`) re-run a command there.

With `autoscaling` (`fake_provider`), the head's monitor runs Ray's autoscaler over its fake multi-node provider: it
starts and stops worker raylets on this machine as a cloud provider would start and stop VMs, answering the pending
placement groups and `request_resources` calls of a run. (`prometheus.py` scrapes the nodes' metrics endpoints.)
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
METRICS_PORT = 23002  # the head's metrics endpoint; worker node i's is METRICS_PORT + 100 i
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
               RAY_metrics_report_interval_ms="1000", RAY_agent_register_timeout_ms="120000",  # a loaded machine
               RAY_ADDRESS=f"127.0.0.1:{HEAD_PORT}", PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return {**env, **extra}


def fake_provider(head_resources: dict, worker_types: dict, idle_timeout_min: float = 0.2) -> dict:
    """An autoscaling config for Ray's fake multi-node provider (autoscaler v1; our own: the 2.60 wheel lacks the
    example.yaml `AutoscalingCluster` reads). `worker_types`: node type -> {resources (CPU, pools,
    object_store_memory), max_workers}, from 0 nodes; an idle node is given back after `idle_timeout_min` minutes."""
    lists = ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
             "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    types = {name: {"node_config": {}, "min_workers": 0, **t} for name, t in worker_types.items()}
    return {"cluster_name": "srum-fake", "max_workers": sum(t["max_workers"] for t in types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_min, "head_node_type": "ray.head.default",
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{HEAD_PORT}"},
            "available_node_types": {"ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
                                     **types},
            "auth": {"ssh_user": "ray"}, "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
            **{k: [] for k in lists}}


class LocalCluster:
    """A head (`head_resources`) and named worker nodes, each with distinct ports (node i: 23000 + 100 i, ...);
    `autoscaling` (a `fake_provider` config): worker nodes come and go with the autoscaler instead."""

    def __init__(self, head_resources: dict[str, float], num_cpus: int = 2, temp_dir: Path | None = None,
                 autoscaling: dict | None = None):
        if not in_private_netns():
            raise RuntimeError("LocalCluster runs only inside a private network namespace (unshare -n): Ray's "
                               "cluster mode listens on every interface")
        self.temp = Path(temp_dir or tempfile.mkdtemp(prefix="srum-cluster-"))
        self.num_cpus, self.env, self.nodes = num_cpus, cluster_env(), {}
        extra, env = [], {}
        if autoscaling is not None:
            self.temp.mkdir(parents=True, exist_ok=True)
            (self.temp / "autoscaling.json").write_text(json.dumps(autoscaling))
            extra, env = [f"--autoscaling-config={self.temp / 'autoscaling.json'}"], {"RAY_FAKE_CLUSTER": "1",
                                                                                     "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        self._start("--head", f"--port={HEAD_PORT}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={self.temp / 'ray'}", f"--metrics-export-port={METRICS_PORT}",
                    f"--resources={json.dumps(head_resources)}", *extra, env=env, undo=lambda: self._ray("stop", "--force"))

    def add(self, name: str, resources: dict[str, float]) -> None:
        """Start worker node `name` (again, after `kill`, with the same ports and resources)."""
        i = self.nodes.get(name, {}).get("index", len(self.nodes) + 1)
        base = 23000 + 100 * i
        ports = {"node-manager-port": base, "object-manager-port": base + 1, "metrics-export-port": base + 2,
                 "dashboard-agent-listen-port": base + 3, "dashboard-agent-grpc-port": base + 4,
                 "runtime-env-agent-port": base + 5, "min-worker-port": 30000 + 1000 * i, "max-worker-port": 30999 + 1000 * i}
        self.nodes[name] = {"index": i, "resources": resources, "port": base}
        self._start(f"--address=127.0.0.1:{HEAD_PORT}", f"--num-cpus={self.num_cpus}", f"--resources={json.dumps(resources)}",
                    *(f"--{k}={v}" for k, v in ports.items()), undo=lambda: self.kill(name))

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

    def metrics_targets(self) -> list[str]:  # the metrics endpoints of the head and the named worker nodes
        return [f"127.0.0.1:{METRICS_PORT + 100 * n['index']}" for n in [{"index": 0}, *self.nodes.values()]]

    def _start(self, *args: str, env: dict | None = None, undo=None) -> None:
        """`ray start`, up to 3 times: it gives a raylet 30 s to register, which a loaded machine may need again
        (`undo` removes what a failed start left)."""
        for attempt in range(3):
            try:
                return self._ray("start", *args, "--node-ip-address=127.0.0.1", env=env)
            except RuntimeError:
                undo()
                if attempt == 2:
                    raise

    def _ray(self, *args: str, env: dict | None = None) -> None:
        out = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env={**self.env, **(env or {})},
                             capture_output=True, text=True)
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
    """`srum train --engine ray` on the cluster; node `node` (or, for "role:learner", the node the run placed its learner
    on) killed once `kill_at_step` steps are learned and started again `down_s` seconds later. Returns the run's
    summary and what its ledger says: every rollout id learned once?"""
    run_dir = Path(run_dir)
    proc, log = _start_train(cluster, run_dir, sets)
    t0, killed_at, t_killed = time.time(), None, None
    while proc.poll() is None and time.time() - t0 < timeout:
        steps = _lines(run_dir / "metrics.jsonl")
        if killed_at is None and steps >= kill_at_step:
            if node.startswith("role:"):  # the worker node whose raylet started that role's process
                pid = next(a["pid"] for a in json.loads((run_dir / "placement.json").read_text())["actors"]
                           if a["role"] == node[5:])
                node = next(n for n, v in cluster.nodes.items() if any(pid in _descendants(int(r)) for r in
                                                                       _pgrep(f"node_manager_port={v['port']}")))
            killed_at, victims = steps, cluster.kill(node)
            t_kill = t_killed = time.time()
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
    return {"returncode": proc.returncode, "killed_at_step": killed_at, "killed_at_time": t_killed,
            "processes_killed": len(victims) if killed_at else 0,
            "steps": len(ledger), "rollout_ids": len(ids), "unique_ids": len(set(ids)), "seconds": round(time.time() - t0, 1),
            "summary": results.get("ray", {}), "placement": json.loads((run_dir / "placement.json").read_text())}


def _start_train(cluster: LocalCluster, run_dir: Path, sets: list[str]):
    """`srum train --engine ray --out run_dir --set ...` on the cluster, its output in run_dir's sibling NAME.log."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "srum"), "train", "--engine", "ray", "--out", str(run_dir),
           *[a for s in sets for a in ("--set", s)]]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    return subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT), log


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


# a second driver, once a second: the run's request to the autoscaler (bundles asking for the pool), live nodes, the
# pool on them and in use (a generator holds 1), and from the run's rows: step, generators, the learner's idle share
WATCH = """
import json, sys, time
from pathlib import Path
import ray
from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
from ray.experimental.internal_kv import _internal_kv_get
ray.init(log_to_driver=False)
pool, rows = sys.argv[1], Path(sys.argv[2])
while True:
    req = json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL) or b"[]")
    total, free = ray.cluster_resources().get(pool, 0), ray.available_resources().get(pool, 0)
    seen = [json.loads(x) for x in rows.read_text().splitlines() if x.endswith("}")] if rows.exists() else []
    a, b = (seen[-4], seen[-1]) if len(seen) > 3 else (None, None)
    idle = (b["learner_idle_ratio"] * b["t"] - a["learner_idle_ratio"] * a["t"]) / (b["t"] - a["t"]) if a else None
    print(json.dumps({"time": time.time(), "request": sum(x.get(pool, 0) > 0 for x in req),
                      "nodes": sum(n["Alive"] for n in ray.nodes()), "pool": total, "pool_in_use": total - free,
                      "step": seen[-1]["step"] if seen else 0, "generators": seen[-1]["generators"] if seen else None,
                      "learner_idle_share": None if idle is None else round(idle, 3)}), flush=True)
    time.sleep(1)
"""


def train_autoscaled(cluster: LocalCluster, run_dir: Path, sets: list[str], pool: str, settle_s: float = 240.0,
                     timeout: float = 900.0) -> dict:
    """`srum train --engine ray` on an autoscaling cluster, watched once a second (WATCH) while it runs and after,
    until the cluster is back to the nodes it started with (the autoscaler gave back what it added) or `settle_s`."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    trace_path = run_dir.parent / f"{run_dir.name}.trace.jsonl"
    with trace_path.open("w") as out:
        watcher = subprocess.Popen([sys.executable, "-c", WATCH, pool, str(run_dir / "metrics.jsonl")], env=cluster.env,
                                   stdout=out, stderr=subprocess.DEVNULL)
    t0, listening = time.time(), set()
    proc, log = _start_train(cluster, run_dir, sets)
    try:
        while proc.poll() is None:  # every listener of the cluster, the nodes the autoscaler adds included
            if time.time() - t0 > timeout:
                raise TimeoutError(f"srum train did not finish in {timeout:.0f} s (log: {log.name})")
            listening |= set(cluster.listeners())
            time.sleep(2)
        t_end = time.time()
        while time.time() - t_end < settle_s and not _settled(_jsonl(trace_path), t_end):
            time.sleep(1)
    finally:
        for p in (proc, watcher):
            if p.poll() is None:
                p.kill()
    trace = _jsonl(trace_path)
    rows, last = [], None
    for r in trace:  # the rows where something changed (and the last)
        key = (r["request"], r["nodes"], r["pool"], r["pool_in_use"], r["generators"])
        if key != last or r is trace[-1]:
            rows.append({"t": round(r["time"] - t0, 1), **{k: v for k, v in r.items() if k != "time"}})
            last = key
    monitor = cluster.temp / "ray" / "session_latest" / "logs" / "monitor.log"
    said = [x.split(" -- ", 1)[-1] for x in (monitor.read_text().splitlines() if monitor.exists() else [])
            if any(w in x for w in ("Adding", "Removing", "Terminating", "terminating"))]
    ledger = _jsonl(run_dir / "ledger.jsonl")
    ids = [i for row in ledger for i in row["ids"]]
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    return {"returncode": proc.returncode, "seconds_run": round(t_end - t0, 1), "steps": len(ledger),
            "rollout_ids": len(ids), "unique_ids": len(set(ids)), "nodes_start": trace[0]["nodes"] if trace else None,
            "nodes_max": max((r["nodes"] for r in trace), default=None), "nodes_end": trace[-1]["nodes"] if trace else None,
            "trace": rows, "autoscaler_said": said, "summary": results.get("ray", {}), "listen_addresses": sorted(listening),
            "srum_said": list(dict.fromkeys(x[x.index("srum: "):] for x in Path(log.name).read_text().splitlines()
                                            if "srum: autoscale" in x or "srum: node" in x))}


def _settled(trace: list[dict], t_end: float) -> bool:
    """The run is over and the cluster has as many nodes as it started with."""
    return bool(trace) and trace[-1]["time"] > t_end and trace[-1]["nodes"] <= trace[0]["nodes"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")] if path.exists() else []
