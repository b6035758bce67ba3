"""Issue 39 on the Ray engine: a generator holding other weights than the learner published, and a NaN loss, stop
the run by name (the controller's log line, RUN/stopped.json, `srum status`), no checkpoint written from the bad
state; the newest checkpoint resumes to the weights of a run that was never stopped. Faults: SRUM_FAULT in the
actors' environment (srum/testing/faults.py)."""

import json

import pytest
import ray
import torch

from srum.actors.driver import RayEngine, start_local_ray
from srum.config import TrainConfig, load_config
from srum.io import StopRun
from srum.models import load_model
from srum.status import run_status


@pytest.fixture(scope="module")
def faulty_ray(tmp_path_factory):
    markers = tmp_path_factory.mktemp("markers")
    env = {"SRUM_FAULT": f"corrupt_weights:2:{markers / 'corrupt'},nan_loss:3:{markers / 'nan'},judge_hang:6:{markers / 'hang'}"}
    start_local_ray(num_cpus=2, log_to_driver=False, runtime_env={
        "env_vars": env, "worker_process_setup_hook": "srum.actors.driver.loopback_serve_replicas"})
    yield markers
    ray.shutdown()


def cfg_for(model_dir, steps):
    sets = [f"model={model_dir}", f"steps={steps}", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "checkpoint_every=2", "sample_every=100", "learner.lr=0.01", "eval.at_start=false", "eval.at_end=false",
            "ray.max_staleness=0", "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25", "ray.learner.num_cpus=0.5"]
    return load_config(TrainConfig, None, sets)


def test_a_corrupted_weight_version_and_a_nan_loss_stop_the_run_by_name(faulty_ray, tmp_path, tiny_model_dir):
    lines = []
    # 1. the generator flips a value of version 2 after loading it: the digest check stops the run at that sync
    run = tmp_path / "corrupt"
    with pytest.raises(StopRun, match="^a generator .pid [0-9]+. holds other weights than the learner published as version 2") as e:
        RayEngine(cfg_for(tiny_model_dir, 4), run, lines.append).run()
    assert e.value.reason == "weight_digest_mismatch" and (faulty_ray / "corrupt").exists()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # within one step: batch 2 was never generated
    assert run_status(run)["state"].startswith("stopped (weight_digest_mismatch) after step 2")
    assert json.loads((run / "stopped.json").read_text())["message"].startswith("a generator (pid")  # its words, no traceback
    # 2. update 3's loss is NaN: no step, no checkpoint from it; the same command resumes from step 2
    run = tmp_path / "nan"
    with pytest.raises(StopRun, match="^update 3: non-finite total") as e:
        RayEngine(cfg_for(tiny_model_dir, 4), run, lines.append).run()
    assert e.value.reason == "non_finite" and (run / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert not (run / "checkpoints" / "step_000003").exists()
    assert run_status(run)["state"].startswith("stopped (non_finite) after step 2, newest checkpoint step_000002")
    assert any("run stopped (non_finite)" in x for x in lines)
    RayEngine(cfg_for(tiny_model_dir, 4), run, lines.append).run()  # both faults have fired: runs through
    straight = tmp_path / "straight"
    RayEngine(cfg_for(tiny_model_dir, 4), straight, lines.append).run()
    a, b = (load_model(r / "checkpoints" / "step_000004" / "model").flat_weights() for r in (run, straight))
    assert torch.equal(a, b)


def test_a_hung_judge_fails_its_batch_at_the_timeout_and_is_replaced(faulty_ray, tmp_path, tiny_model_dir):
    """reward.judge.timeout_s on the Ray engine: the judge's sixth call never returns (judge_hang); after 3 s its
    samples fail (dropped, counted), the actor is replaced by a fresh judge and the run goes on to its last step."""
    lines, run = [], tmp_path / "hung"
    for fired in ("corrupt", "nan"):  # the module's other faults: spent (so that this test also runs alone)
        (faulty_ray / fired).touch()
    cfg = cfg_for(tiny_model_dir, 8)
    cfg.reward.judge.timeout_s = 3
    out = RayEngine(cfg, run, lines.append).run()
    assert (faulty_ray / "hang").exists() and out["steps_done"] == 8 and out["ray"]["restarts"]["judge"] == 1
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["judge_failures"] for r in rows] == [0] * 5 + [4] + [0] * 2 and rows[5]["skipped"]
    assert [r["restarts_judge"] for r in rows] == [0] * 5 + [1] * 3  # replaced when its failed batch came back
    assert run_status(run)["judge_failures"] == {"samples": 4, "dropped": 4, "of": 32}
