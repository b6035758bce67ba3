"""The placement table: which node each actor of the run landed on, as the cluster placed it (role pools are asked
for with `ray.<role>.resources`). Printed at start, written to RUN/placement.json and exported as `srum_actors`."""

from __future__ import annotations

import collections
from pathlib import Path

import ray

from ..io import write_json


def placement_table(actors: dict[str, list], transport: str, run_dir: Path, metrics) -> list[dict]:
    """One row per actor: role, node id, node address, pid; every listener of the table, the log and the metric."""
    rows = []
    for role, group in actors.items():
        for where in ray.get([a.where.remote() for a in list(group)]):
            rows.append({"role": role, **where})
    per_node = collections.Counter((r["role"], r["node_ip"], r["node_id"]) for r in rows)
    for (role, ip, node), n in sorted(per_node.items()):
        metrics.set("srum_actors", n, role=role, node=node[:12])
    nodes = sorted({(r["node_ip"], r["node_id"]) for r in rows})
    for ip, node in nodes:
        roles = ", ".join(f"{n} {role}" for (role, i, nd), n in sorted(per_node.items()) if nd == node)
        print(f"srum: node {node[:12]} ({ip}): {roles}; weights by {transport}", flush=True)
    write_json(Path(run_dir) / "placement.json", {"transport": transport, "actors": rows})
    return rows
