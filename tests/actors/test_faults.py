"""Faults, with real processes killed (SIGKILL): actors of a running Ray job, and a local run killed inside a
checkpoint write. The full set (ten kills, three kill points per engine, streaming across a kill) is
bench/faults.py; these are the fast ones CI runs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray

from srum.actors.driver import NAMESPACE, RayEngine, start_local_ray
from srum.config import TrainConfig, load_config


@pytest.fixture(scope="module")
def local_ray():
    start_local_ray(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


def status(ctl):
    return ray.get(ctl.status.remote())


def wait_step(ctl, n, errors, timeout=600):  # a replaced actor starts slowly on a loaded machine
    t = time.time()
    while status(ctl)["step"] < n:
        assert not errors and time.time() - t < timeout, errors
        time.sleep(0.1)


@pytest.mark.slow
def test_a_generator_a_judge_and_the_learner_killed_mid_run(local_ray, tmp_path, tiny_model_dir):
    cfg = load_config(TrainConfig, None, [f"model={tiny_model_dir}", "steps=12", "rollout.prompts_per_step=2",
                                          "rollout.samples_per_prompt=2", "rollout.sampling.steps=2", "checkpoint_every=2",
                                          "sample_every=100", "eval.at_start=false", "eval.at_end=false", "ray.name=faulttest",
                                          "ray.max_staleness=1", "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25",
                                          "ray.learner.num_cpus=0.5"])
    out, errors = {}, []

    def train():
        try:
            out.update(RayEngine(cfg, tmp_path / "run", lambda *_: None).run())
        except Exception as e:  # noqa: BLE001 - surfaced by the asserts
            errors.append(e)

    th = threading.Thread(target=train)
    th.start()
    t = time.time()
    while True:
        try:
            ctl = ray.get_actor("faulttest", namespace=NAMESPACE)
            break
        except ValueError:
            assert time.time() - t < 120 and not errors, errors
            time.sleep(0.2)
    for role, at in (("generator", 3), ("judge", 6), ("learner", 9)):
        wait_step(ctl, at, errors)
        os.kill(ray.get(ctl.actor_pids.remote())[role][0], signal.SIGKILL)
    th.join(300)
    assert not errors, errors
    s = out["ray"]
    assert s["steps_done"] == 12 and s["restarts"]["learner"] == 1
    assert s["restarts_generator"] >= 1 and s["restarts_judge"] >= 1  # a kill of an idle actor is found by the next call
    ledger = [json.loads(x) for x in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    ids = [i for r in ledger for i in r["ids"]]
    assert [r["step"] for r in ledger] == list(range(1, 13))  # the learner's restart dropped the rows it undid
    assert sorted(r["batch"] for r in ledger) == list(range(12)) and len(ids) == len(set(ids)) == 48


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_resumes_to_the_same_weights(tmp_path, tiny_model_dir):
    def train(run, extra_env=None):
        cmd = [sys.executable, "-m", "srum.cli", "train", "--engine", "local", "--out", str(run), "--steps", "4",
               "--set", f"model={tiny_model_dir}", "--set", "rollout.prompts_per_step=2", "--set", "rollout.sampling.steps=2",
               "--set", "checkpoint_every=1", "--set", "eval.at_start=false", "--set", "eval.at_end=false"]
        return subprocess.run(cmd, env={**os.environ, **(extra_env or {})}, capture_output=True, text=True, timeout=600)

    def sha(run):
        return hashlib.sha256((run / "checkpoints" / "step_000004" / "model" / "model.safetensors").read_bytes()).hexdigest()

    assert train(tmp_path / "straight").returncode == 0
    marker = tmp_path / "fired"
    killed = train(tmp_path / "killed", {"SRUM_FAULT": f"checkpoint:2:{marker}"})
    assert killed.returncode == -signal.SIGKILL and marker.exists()
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text().strip() == "step_000001"  # the previous one
    resumed = train(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sha(tmp_path / "killed") == sha(tmp_path / "straight")
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
