"""A real Prometheus (the Debian package `prometheus`) scraping a test cluster's metrics endpoints, and what `srum
status` prints, for the cluster bench and the metrics tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


class Prometheus:
    """A Prometheus server (the Debian package `prometheus`) scraping `targets` every second, on 127.0.0.1:`port`."""

    def __init__(self, targets: list[str], directory: Path, port: int = 9095):
        assert shutil.which("prometheus"), "prometheus is not installed (apt-get install -y prometheus)"
        directory.mkdir(parents=True, exist_ok=True)
        (cfg := directory / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: ray\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
        self.port = port
        self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={directory / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("prometheus did not become ready") from None
                time.sleep(0.2)

    def query(self, query: str, path: str = "query", **params) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode({"query": query, **params})
        return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]

    def node_loss(self, since: float, killed_at: float) -> dict:
        """What Prometheus saw of a node lost at `killed_at`: srum_nodes_lost and srum_restarts (the highest value
        each series reached since `since`), when nodes_lost first read 1 after the kill, each target's lowest `up` since."""
        time.sleep(3)  # the run's last report (every second) and its scrape
        span = f"[{int(time.time() - since) + 1}s]"
        lost = self.query(f"max(max_over_time(ray_srum_nodes_lost_total{span}))")
        restarts = self.query(f"max by (role) (max_over_time(ray_srum_restarts_total{span}))")
        series = self.query("max(ray_srum_nodes_lost_total)", "query_range", start=since, end=time.time(), step=1)
        first = next((float(t) for t, v in (series[0]["values"] if series else []) if float(v) >= 1), None)
        up = self.query(f"min by (instance) (min_over_time(up[{int(time.time() - killed_at)}s]))")
        return {"nodes_lost": float(lost[0]["value"][1]) if lost else None,
                "restarts": {r["metric"]["role"]: float(r["value"][1]) for r in restarts},
                "nodes_lost_seen_after_kill_s": None if first is None else round(first - killed_at, 1),
                "lowest_up": {r["metric"]["instance"]: float(r["value"][1]) for r in up}}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def srum_status(run_dir: Path, env: dict) -> str:
    """What `srum status RUN` prints."""
    out = subprocess.run([str(Path(sys.executable).parent / "srum"), "status", str(run_dir)], env=env,
                         capture_output=True, text=True)
    return (out.stdout + out.stderr).rstrip()
