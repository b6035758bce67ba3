"""Issue 39 on the local engine: numbers that go wrong, a judge that fails and weights that are not the published
ones stop the run by name (log line, RUN/stopped.json, `srum status`), never writing from the bad state; the newest
checkpoint resumes bit-exactly. Faults are injected through SRUM_FAULT (srum/testing/faults.py)."""

import json

import numpy as np
import pytest
import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.io import StopRun
from srum.status import run_status

NO_EVAL = {"eval.at_start": "false", "eval.at_end": "false"}


def cfg(model_dir, steps, **extra):
    sets = [f"model={model_dir}", f"steps={steps}", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "checkpoint_every=2", "sample_every=100", "learner.lr=0.01"]
    return load_config(TrainConfig, None, sets + [f"{k}={v}" for k, v in {**NO_EVAL, **extra}.items()])


def rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_nan_loss_stops_the_run_and_the_newest_checkpoint_resumes_exactly(tmp_path, tiny_model_dir, monkeypatch):
    lines = []
    straight = LocalEngine(cfg(tiny_model_dir, 4), tmp_path / "straight", lines.append)
    straight.run()
    marker = tmp_path / "fired"
    monkeypatch.setenv("SRUM_FAULT", f"nan_loss:3:{marker}")
    run = tmp_path / "run"
    with pytest.raises(StopRun, match=r"update 3: non-finite total") as e:
        LocalEngine(cfg(tiny_model_dir, 4), run, lines.append).run()
    assert e.value.reason == "non_finite" and marker.exists()
    # the last good state: checkpoint 2, rows of steps 1-2 only, nothing of update 3
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert not (run / "checkpoints" / "step_000003").exists() and [r["step"] for r in rows(run)] == [1, 2]
    st = run_status(run)
    assert st["state"].startswith("stopped (non_finite) after step 2, newest checkpoint step_000002"), st
    assert any("run stopped (non_finite)" in x for x in lines)
    resumed = LocalEngine(cfg(tiny_model_dir, 4), run, lines.append)  # the marker is there: the fault has fired
    resumed.run()
    assert torch.equal(resumed.policy.flat_weights(), straight.policy.flat_weights())
    assert not (run / "stopped.json").exists() and [r["step"] for r in rows(run)] == [1, 2, 3, 4]


def test_non_finite_gradients_and_reward_maps_are_refused_before_the_step(tiny_model):
    from srum.config import LearnerConfig, RewardConfig
    from srum.learner.learner import Learner, NonFiniteError
    from srum.records import Judgement, Rollout

    learner = Learner(tiny_model, LearnerConfig(), RewardConfig(), group=2)
    before = tiny_model.flat_weights()
    n = tiny_model.token_grid ** 2
    rollouts = [Rollout(f"r{i}", "a red square", "single", np.zeros((32, 32, 3), np.uint8), np.zeros(n, np.int64))
                for i in range(2)]
    bad_map = np.full((32, 32), 0.5, np.float32)
    bad_map[0, 0] = 1.5
    judgements = [Judgement("r0", 0.0, reward_map=np.full((32, 32), 0.5, np.float32)), Judgement("r1", 0.0, reward_map=bad_map)]
    with pytest.raises(NonFiniteError, match=r"update 1: the reward map of r1 lies outside \[0, 1\] \(min 0.5, max 1.5\)"):
        learner.step(list(zip(rollouts, judgements)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        tiny_model.synced[0].view(-1)[0] = float("inf")  # a weight gone bad: the gradient follows it
    judgements[1] = Judgement("r1", 0.0, reward_map=np.full((32, 32), 0.7, np.float32))
    with pytest.raises(NonFiniteError, match=r"update 1: non-finite .*weights"):
        learner.step(list(zip(rollouts, judgements)), torch.Generator().manual_seed(0))
    after = tiny_model.flat_weights()
    assert learner.version == 0 and torch.equal(after[1:], before[1:])  # no step was taken


def test_a_judge_failing_every_sample_stops_within_the_window(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SRUM_FAULT", "judge_fail:100:-")
    run = tmp_path / "run"
    c = cfg(tiny_model_dir, 20, **{"reward.judge.failure_window": 8, "reward.judge.max_failure_share": 0.5})
    with pytest.raises(StopRun, match=r"the judge failed 8 of the last 8 samples .* at step 2") as e:
        LocalEngine(c, run, lambda *_: None).run()
    assert e.value.reason == "judge_failures"
    r = rows(run)  # 4 samples a step: step 2 brings the failures over half of the window; nothing was learned
    assert [x["step"] for x in r] == [1, 2] and all(x["judge_failures"] == 4 and x["judge_dropped"] == 4 and x["skipped"] for x in r)
    assert r[-1]["version"] == 0 and not (run / "checkpoints" / "latest").exists()
    st = run_status(run)
    assert st["state"].startswith("stopped (judge_failures)") and st["judge_failures"] == {"samples": 8, "dropped": 8, "of": 8}


def test_a_judge_failing_5_percent_runs_on_with_the_drops_counted(tmp_path, tiny_model_dir, monkeypatch):
    import zlib

    monkeypatch.setenv("SRUM_FAULT", "judge_fail:5:-")
    run = tmp_path / "run"
    LocalEngine(cfg(tiny_model_dir, 8), run, lambda *_: None).run()
    failed = [f"b{b}-{i}" for b in range(8) for i in range(4) if zlib.crc32(f"b{b}-{i}".encode()) % 100 < 5]
    assert failed == ["b0-3", "b2-2", "b7-3"]
    r = rows(run)
    assert [x["judge_failures"] for x in r] == [1, 0, 1, 0, 0, 0, 0, 1]
    assert [x["judge_dropped"] for x in r] == [2, 0, 2, 0, 0, 0, 0, 2]  # the failed sample's whole group (2 a prompt)
    assert r[-1]["version"] == 8 and run_status(run)["judge_failures"] == {"samples": 3, "dropped": 6, "of": 32}


def test_a_judge_call_that_hangs_fails_its_samples_at_the_timeout_and_the_run_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    """reward.judge.timeout_s: the third judge call never returns (SRUM_FAULT judge_hang); after 2 s its samples fail
    (dropped and counted, never a 0), the run goes on with the next batch."""
    import time

    monkeypatch.setenv("SRUM_FAULT", f"judge_hang:3:{tmp_path / 'hung'}")
    run, t = tmp_path / "run", time.monotonic()
    LocalEngine(cfg(tiny_model_dir, 5, **{"reward.judge.timeout_s": 2}), run, lambda *_: None).run()
    assert (tmp_path / "hung").exists() and time.monotonic() - t > 2
    r = rows(run)
    assert [x["judge_failures"] for x in r] == [0, 0, 4, 0, 0] and r[2]["skipped"] and r[-1]["version"] == 4
    assert run_status(run)["judge_failures"] == {"samples": 4, "dropped": 4, "of": 20}


def test_within_returns_raises_or_times_out():
    from srum.stages import within

    assert within(5, sum, [1, 2]) == 3
    with pytest.raises(ZeroDivisionError):
        within(5, lambda: 1 / 0)
    with pytest.raises(TimeoutError, match="still running after 0.2 s"):
        within(0.2, __import__("threading").Event().wait)


def test_the_text_judge_fails_a_sample_rather_than_score_it_0():
    from srum.records import Rollout
    from srum.rewards.judge import TextModeJudge
    from srum.rewards.proposals import GridProposer
    from srum.stages import drop_failed

    answers = iter(["Region 1: Score: 0.5\nGlobal: Score: 0.2", "no idea", "still no idea", "what?"])

    class Model:
        def ask(self, question, image):
            return next(answers)

    judge = TextModeJudge(Model(), GridProposer(1), retries=2)
    rollouts = [Rollout(f"r{i}", "a red square", "single", np.zeros((32, 32, 3), np.uint8), np.zeros(4)) for i in range(2)]
    ok, failed = judge.judge(rollouts)
    assert ok.failed is None and ok.global_score == 0.2
    assert failed.failed == "unparsed: 2 scores missing after 3 attempts" and failed.reward_map is None
    kept, judged, n = drop_failed(rollouts + rollouts, [ok, failed, ok, ok], group=2)
    assert n == 1 and [r.id for r in kept] == ["r0", "r1"] and judged == [ok, ok]  # r1's whole group went
