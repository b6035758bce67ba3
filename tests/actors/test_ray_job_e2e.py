"""End to end on a real Ray head (`ray start --head` on 127.0.0.1): `ray job submit` runs training to
SUCCEEDED with a checkpoint, `ray job stop` ends a run with a final checkpoint, and `srum scale`
resizes the generators of a running job 1 -> 2 -> 1 with every produced batch accounted for."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SRUM = str(Path(sys.executable).parent / "srum")
RAY = str(Path(sys.executable).parent / "ray")
SMALL = ["--set", "rollout.prompts_per_step=2", "--set", "rollout.sampling.steps=2", "--set", "eval.at_start=false",
         "--set", "ray.generator.num_cpus=0.25", "--set", "ray.judge.num_cpus=0.25", "--set", "ray.learner.num_cpus=0.5"]


def submit(head, workdir: Path, *cmd: str, wait: bool = True):
    workdir.mkdir(parents=True, exist_ok=True)
    args = [RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(workdir)]
    p = head.run(*args, *([] if wait else ["--no-wait"]), "--", *cmd, check=wait)
    return p, re.search(r"raysubmit_\w+", p.stdout + p.stderr).group(0)


def job_status(head, job_id: str) -> str:
    p = head.run(RAY, "job", "status", "--address", head.dashboard, job_id)
    words = re.findall(r"\b(pending|running|succeeded|failed|stopped)\b", (p.stdout + p.stderr).lower())
    assert words, p.stdout + p.stderr
    return words[-1].upper()


def wait_rows(metrics: Path, pred, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        if rows and pred(rows):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting on {metrics}")


def test_ray_job_submit_runs_training_to_success(ray_head, tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    (work / "job.yaml").write_text("engine: ray\nsteps: 3\ncheckpoint_every: 2\neval: {prompts: 6, images_per_prompt: 1}\n")
    run = tmp_path / "run"
    p, job = submit(ray_head, work, "srum", "train", "--config", "job.yaml", "--out", str(run), *SMALL)
    assert "succeeded" in p.stdout + p.stderr and job_status(ray_head, job) == "SUCCEEDED"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert (run / "checkpoints" / "step_000003" / "model" / "model.safetensors").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["steps_done"] == 3 and "final" in results and results["ray"]["consumed"] == 3


def test_ray_job_stop_ends_with_a_final_checkpoint(ray_head, tmp_path):
    run = tmp_path / "run"
    _, job = submit(ray_head, tmp_path / "job", "srum", "train", "--engine", "ray", "--steps", "100000", "--out", str(run),
                    "--set", "checkpoint_every=100000", *SMALL, wait=False)
    wait_rows(run / "metrics.jsonl", lambda rows: len(rows) >= 3)
    ray_head.run(RAY, "job", "stop", "--address", ray_head.dashboard, job)
    assert job_status(ray_head, job) == "STOPPED"
    deadline = time.time() + 30
    while not (run / "results.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    results = json.loads((run / "results.json").read_text())
    steps = len((run / "metrics.jsonl").read_text().splitlines())
    assert results["ray"]["stopped"] and results["steps_done"] == steps >= 3
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{steps:06d}"


def test_srum_scale_resizes_a_running_job(ray_head, tmp_path):
    run = tmp_path / "run"
    _, job = submit(ray_head, tmp_path / "job", "srum", "train", "--engine", "ray", "--steps", "120", "--out", str(run),
                    "--set", "ray.stages=stand_in", "--set", "ray.name=e2e-scale", "--set", "ray.max_staleness=3",
                    "--set", "ray.stand_in.generate_s=0.15", "--set", "ray.stand_in.judge_s=0.01",
                    "--set", "ray.stand_in.learn_s=0.01", "--set", "ray.stand_in.weights_mb=1", *SMALL, wait=False)
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.address}

    def scale(n):
        return subprocess.run([SRUM, "scale", "--generators", str(n), "--name", "e2e-scale"], env=env,
                              capture_output=True, text=True, timeout=120)

    wait_rows(run / "metrics.jsonl", lambda rows: len(rows) >= 5)
    p = scale(2)
    assert p.returncode == 0, p.stderr
    wait_rows(run / "metrics.jsonl", lambda rows: rows[-1]["generators"] == 2 and len(rows) >= 30)
    p = scale(1)
    assert p.returncode == 0, p.stderr
    deadline = time.time() + 120
    while job_status(ray_head, job) not in ("SUCCEEDED", "FAILED") and time.time() < deadline:
        time.sleep(0.5)
    assert job_status(ray_head, job) == "SUCCEEDED"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gens = [r["generators"] for r in rows]
    assert gens[0] == 1 and 2 in gens and gens[-1] == 1
    s = json.loads((run / "results.json").read_text())["ray"]
    assert s["consumed"] == 120 and s["generated"] == s["consumed"] + s["dropped_stale"] + s["abandoned_at_stop"]
    assert s["abandoned_at_stop"] == 0
