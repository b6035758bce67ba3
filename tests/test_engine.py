"""The local engine: a few real training steps on a tiny model, determinism, resume, run directory."""

import json

import numpy as np
import pytest
import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.models import load_model
from srum.models.janus.model import GENERATION_MODULES


def tiny_cfg(model_dir, steps=2, **extra):
    sets = [f"model={model_dir}", f"steps={steps}", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "rollout.sampling.steps=2", "eval.prompts=6", "eval.images_per_prompt=1", "checkpoint_every=1",
            "sample_every=1", "learner.lr=0.01"]
    return load_config(TrainConfig, None, sets + [f"{k}={v}" for k, v in extra.items()])


def quiet(*_):
    pass


@pytest.mark.slow
def test_few_steps_end_to_end(tmp_path, tiny_model_dir):
    results = LocalEngine(tiny_cfg(tiny_model_dir), tmp_path / "run", quiet).run()
    run = tmp_path / "run"
    assert set(results) == {"initial", "final", "steps_done", "train_seconds", "samples_per_s", "torch_threads"} and results["steps_done"] == 2
    assert "judge_mean_global" in results["final"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["version"] == 2
    assert all(np.isfinite(r["total"]) and r["kl_term"] >= 0 for r in rows)
    assert (run / "samples" / "step_000002.png").exists() and (run / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert (run / "eval" / "final" / "report.json").exists()
    # only the generation path moved; the vision tower, the aligner and the VQ (the judge's eyes) are as they were
    before, after = load_model(tiny_model_dir).net.state_dict(), load_model(run / "checkpoints" / "step_000002" / "model").net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(GENERATION_MODULES) for k in moved)


def test_same_seed_same_weights(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, **{"eval.at_start": "false", "eval.at_end": "false"})
    a, b = LocalEngine(cfg, tmp_path / "a", quiet), LocalEngine(cfg, tmp_path / "b", quiet)
    a.run(), b.run()
    assert torch.equal(a.policy.flat_weights(), b.policy.flat_weights())
    c = LocalEngine(cfg.model_copy(update={"seed": 1}), tmp_path / "c", quiet)
    c.run()
    assert not torch.equal(a.policy.flat_weights(), c.policy.flat_weights())


def test_resume_continues_exactly(tmp_path, tiny_model_dir):
    no_eval = {"eval.at_start": "false", "eval.at_end": "false"}
    straight = LocalEngine(tiny_cfg(tiny_model_dir, steps=3, **no_eval), tmp_path / "a", quiet)
    straight.run()
    LocalEngine(tiny_cfg(tiny_model_dir, steps=2, **no_eval), tmp_path / "b", quiet).run()
    resumed = LocalEngine(tiny_cfg(tiny_model_dir, steps=3, **no_eval), tmp_path / "b", quiet)
    resumed.run()
    assert resumed.learner.version == 3
    assert torch.equal(straight.policy.flat_weights(), resumed.policy.flat_weights())


def test_train_all_and_judge_follows(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, steps=1, **{"learner.train": "all", "learner.judge_follows": "true",
                                                 "eval.at_start": "false", "eval.at_end": "false"})
    e = LocalEngine(cfg, tmp_path / "r", quiet)
    assert e.judge.model is e.policy
    q = e.policy.net.model.language_model.layers[0].self_attn.q_proj.weight  # the trunk the judge reads with too
    before = q.detach().clone()
    e.run()
    assert not torch.equal(before, e.policy.net.model.language_model.layers[0].self_attn.q_proj.weight)
