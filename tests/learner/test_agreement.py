"""Issue 39, "rollout and learner agree" (srum/learner/agreement.py): the learner re-scores the image tokens a generator
sampled and compares with the log-probabilities the generator recorded; on the CPU in fp32 the gap is 0 within float
tolerance, and a mismatch (SRUM_FAULT logprob_drift) is said and then stops the run by name."""

import json

import numpy as np
import pytest
import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.io import StopRun
from srum.learner.agreement import Agreement, checks, chosen, logprob_gap
from srum.models import SampleOptions
from srum.status import run_status

FP32_TOLERANCE = 1e-4  # nats, mean over tokens; measured ~5e-9 (max 5e-7)


def cfg(model_dir, steps, **extra):
    sets = [f"model={model_dir}", f"steps={steps}", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "checkpoint_every=2", "sample_every=100", "learner.lr=0.01", "eval.at_start=false", "eval.at_end=false"]
    return load_config(TrainConfig, None, sets + [f"{k}={v}" for k, v in extra.items()])


def rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("opts", [SampleOptions(), SampleOptions(cfg_scale=3.0, temperature=0.7, top_k=16)])
def test_the_sampler_records_what_teacher_forcing_scores(tiny_model, opts):
    """The recorded log-probability is the policy's own (conditional, temperature 1), whatever the sampler's settings."""
    from srum.learner.agreement import token_logprobs

    _, tokens, lp = tiny_model.sample(["a red square", "two blue circles"], 3, opts, logprobs=True)
    again = token_logprobs(tiny_model, ["a red square", "two blue circles"], torch.from_numpy(tokens))
    assert lp.shape == tokens.shape and lp.dtype == np.float32 and (lp <= 0).all()
    assert float((again - torch.from_numpy(lp)).abs().max()) < FP32_TOLERANCE


def test_the_gap_is_0_on_the_cpu_over_a_short_real_run(tmp_path, tiny_model_dir):
    lines = []
    LocalEngine(cfg(tiny_model_dir, 6, **{"learner.logprob_check": 1.0}), tmp_path / "run", lines.append).run()
    gaps = [r["logprob_gap"] for r in rows(tmp_path / "run")]
    assert len(gaps) == 6 and max(gaps) < FP32_TOLERANCE, gaps  # every step checked: the local engine is lock-step
    assert max(r["logprob_gap_max"] for r in rows(tmp_path / "run")) < 10 * FP32_TOLERANCE
    assert not any("logprob" in x for x in lines)
    st = run_status(tmp_path / "run")["logprob_gap"]
    assert st["checked"] == 6 and st["unchecked"] == 0 and st["max"] < FP32_TOLERANCE


def test_the_check_reads_only_the_same_weights_with_it_or_without(tmp_path, tiny_model_dir):
    on = LocalEngine(cfg(tiny_model_dir, 3, **{"learner.logprob_check": 1.0}), tmp_path / "on", print)
    off = LocalEngine(cfg(tiny_model_dir, 3, **{"learner.logprob_check": 0.0}), tmp_path / "off", print)
    on.run(), off.run()
    assert torch.equal(on.policy.flat_weights(), off.policy.flat_weights())
    assert not any("logprob_gap" in r for r in rows(tmp_path / "off"))


def test_a_recorded_mismatch_warns_then_stops_the_run_by_name(tmp_path, tiny_model_dir, monkeypatch):
    # batch b's recorded log-probabilities are b x 0.05 nats off: step 2 (batch 1) warns, step 3 (0.10) is not above the
    # stop, step 4 (0.15) stops
    monkeypatch.setenv("SRUM_FAULT", "logprob_drift:5:-")
    lines, run = [], tmp_path / "run"
    c = cfg(tiny_model_dir, 6, **{"learner.logprob_check": 1.0, "learner.logprob_warn": 0.02, "learner.logprob_stop": 0.12})
    with pytest.raises(StopRun, match=r"step 4: .* 0.15 nats from .* above learner.logprob_stop 0.12") as e:
        LocalEngine(c, run, lines.append).run()
    assert e.value.reason == "logprob_gap"
    warnings = [x for x in lines if "warning" in x and "logprob_warn" in x]
    assert [w.split("warning: step ")[1].split(":")[0] for w in warnings] == ["2", "3"], lines
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4]  # the stopping step's row says its gap
    assert rows(run)[-1]["logprob_gap"] == pytest.approx(0.15, abs=1e-3)
    stopped = json.loads((run / "stopped.json").read_text())
    assert stopped["reason"] == "logprob_gap" and stopped["checkpoint"] == "step_000002"
    assert run_status(run)["state"].startswith("stopped (logprob_gap) after step 4"), run_status(run)


def test_a_share_of_steps_is_checked_and_older_batches_count_as_unchecked(tiny_model):
    from srum.rollout.draw import draw_rollouts

    picked = [v for v in range(1000) if chosen(0.1, 0, v)]
    assert 60 < len(picked) < 140 and picked == [v for v in range(1000) if chosen(0.1, 0, v)]
    assert not any(chosen(0.0, 0, v) for v in range(100)) and all(chosen(1.0, 0, v) for v in range(100))
    assert draw_rollouts(tiny_model, ["a red square"], 2, seed=0)[0].logprobs is None  # recorded only when asked
    rollouts = draw_rollouts(tiny_model, ["a red square"], 2, seed=0, logprobs=True)
    assert logprob_gap(tiny_model, rollouts, version=0)["logprob_gap"] < FP32_TOLERANCE
    assert logprob_gap(tiny_model, rollouts, version=1) == {"logprob_unchecked": 1}  # the learner moved on
    assert Agreement(tiny_model, tiny_model.flatten_parameters(), 0.0, 0, 0).gap(rollouts, 0) == {}  # the check off


def test_a_flow_backend_is_skipped_by_name():
    class Flow:
        kind, objective = "bagel", "flow"

    assert "bagel backend samples no tokens" in checks(Flow(), 0.1)
    assert checks(Flow(), 0.0) is None and Agreement(Flow(), torch.zeros(1), 1.0, 0, 0).gap([], 0) == {}


def test_a_batch_one_version_old_is_checked_with_the_weights_that_sampled_it(tiny_model):
    """ray.max_staleness 1: the learner keeps the chosen version's weights, re-scores the late batch with them swapped
    in and puts its own back bit for bit; without the copy (keep 0, or sampled before a resume) it is unchecked."""
    from srum.rollout.draw import draw_rollouts

    weights = tiny_model.flatten_parameters()
    keeping, not_keeping = (Agreement(tiny_model, weights, 1.0, 0, keep) for keep in (1, 0))
    rollouts = draw_rollouts(tiny_model, ["a red square"], 2, seed=0, logprobs=True)  # sampled by version 0
    assert keeping.gap(rollouts, 0)["logprob_gap"] < FP32_TOLERANCE and 0 in keeping.saved
    not_keeping.gap(rollouts, 0)
    with torch.no_grad():
        weights.add_(torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)) * 0.05)  # an update: version 1
    moved = weights.clone()
    assert logprob_gap(tiny_model, rollouts, version=0)["logprob_gap"] > 100 * FP32_TOLERANCE  # other weights
    assert keeping.gap(rollouts, 1)["logprob_gap"] < FP32_TOLERANCE  # the copy of version 0
    assert torch.equal(weights, moved)  # the learner's own weights back, bit for bit
    assert not_keeping.gap(rollouts, 1) == {"logprob_unchecked": 1}
    keeping.gap(rollouts, 3)
    assert 0 not in keeping.saved  # forgotten once no batch of it can come (older than max_staleness)
