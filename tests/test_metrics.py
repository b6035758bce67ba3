"""Metrics: the table in docs/metrics.md is current, the dashboard queries only srum's metrics, and
(end to end) a real Prometheus server scraping a real Ray head sees them while `srum train --engine ray`
runs: the rollout counter increasing, the loss and reward series present, every dashboard metric there."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from srum.metrics import METRICS, metrics_markdown

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "srum-dashboard.json"
RAY = str(Path(sys.executable).parent / "ray")


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    assert exprs
    return {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"\bray_srum_\w+", e)}


def test_metrics_doc_is_current():
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_markdown()


def test_dashboard_queries_only_metrics_srum_exports():
    exported = {m.exported for m in METRICS.values()}
    used = dashboard_metrics()
    assert used <= exported, used - exported
    # the panels the operators asked for: throughput, rewards, losses, staleness, queues, weight sync, idle ratios
    for name in ("ray_srum_batches_total", "ray_srum_global_reward", "ray_srum_local_reward", "ray_srum_loss",
                 "ray_srum_staleness", "ray_srum_queue_depth", "ray_srum_weight_sync_seconds", "ray_srum_idle_ratio"):
        assert name in used


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("SRUM_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is not installed (Debian package `prometheus`); CI installs it in .ci/run")
        pytest.skip("prometheus not installed (apt-get install -y prometheus)")
    return found


def promql(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(ray_head, tmp_path):
    from ray_head import free_port

    from srum.testing.prometheus import Prometheus

    prometheus_binary()  # skipped (or, in CI, failed) with the reason when the package is missing
    server = Prometheus([f"127.0.0.1:{ray_head.metrics_port}"], tmp_path, free_port())
    try:
        yield server.port
    finally:
        server.stop()


@pytest.mark.slow
def test_prometheus_scrapes_a_running_training_job(ray_head, prometheus, tmp_path):
    run = tmp_path / "run"
    deadline = time.time() + 30
    while not [r for r in promql(prometheus, 'up{job="ray"}') if r["value"][1] == "1"]:  # scraped at least once
        assert time.time() < deadline, "prometheus never scraped the Ray head"
        time.sleep(0.5)
    time.sleep(2)
    # series of earlier jobs on this shared head: ignored below, so only this job's own series count
    before = {r["metric"].get("WorkerId") for r in promql(prometheus, '{__name__=~"ray_srum_.*"}')}

    def fresh(query: str) -> list[dict]:
        return [r for r in promql(prometheus, query) if r["metric"].get("WorkerId") not in before]

    job = subprocess.run(
        [RAY, "job", "submit", "--address", ray_head.dashboard, "--no-wait", "--working-dir", str(tmp_path), "--",
         "srum", "train", "--engine", "ray", "--steps", "100000", "--out", str(run), "--set", "eval.at_start=false",
         "--set", "rollout.prompts_per_step=2", "--set", "rollout.sampling.steps=2", "--set", "checkpoint_every=100000",
         "--set", "ray.generator.num_cpus=0.25", "--set", "ray.judge.num_cpus=0.25", "--set", "ray.learner.num_cpus=0.5"],
        env=ray_head.env, capture_output=True, text=True, timeout=120)
    job_id = re.search(r"raysubmit_\w+", job.stdout + job.stderr).group(0)
    try:
        def rollouts_by_worker() -> dict[str, float]:
            """This job's generator series only: other jobs on this head may have left theirs."""
            return {r["metric"]["WorkerId"]: float(r["value"][1]) for r in fresh("ray_srum_rollouts_total")}

        deadline = time.time() + 120
        while time.time() < deadline and not any(rollouts_by_worker().values()):
            time.sleep(1)
        first = rollouts_by_worker()
        assert any(first.values()), "no srum rollouts scraped from this job"
        deadline = time.time() + 60  # Ray reports every second, Prometheus scrapes every second; CI may be slow

        def grew(now):
            return any(now.get(w, 0) > v for w, v in first.items())

        while time.time() < deadline and not grew(rollouts_by_worker()):
            time.sleep(1)
        assert grew(rollouts_by_worker()), "the rollout counter of this job's generator did not increase"
        deadline = time.time() + 60
        while time.time() < deadline and not fresh("ray_srum_loss"):
            time.sleep(1)
        terms = {r["metric"]["term"] for r in fresh("ray_srum_loss")}
        assert terms == {"total", "reward_term", "kl_term"}
        for name in ("ray_srum_global_reward", "ray_srum_local_reward", "ray_srum_reward_map_mean"):
            assert fresh(name), f"{name} missing"
        labels = fresh("ray_srum_rollouts_total")[0]["metric"]
        assert labels["role"] == "generator" and labels["actor"].startswith("generator-")
        # the controller's gauges come from another process than the learner's loss, so they may land a
        # report interval later: wait for them, do not race them
        def missing_metrics() -> list[str]:
            return [n for n in sorted(dashboard_metrics()) if not promql(prometheus, f"{{__name__=~\"{n}(_bucket)?\"}}")]
        deadline = time.time() + 60
        while time.time() < deadline and (missing := missing_metrics()):
            time.sleep(1)
        assert not missing, f"dashboard queries metrics Prometheus does not have: {missing}"
    finally:
        subprocess.run([RAY, "job", "stop", "--address", ray_head.dashboard, job_id], env=ray_head.env,
                       capture_output=True, timeout=120)
