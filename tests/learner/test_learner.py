import numpy as np
import pytest
import torch

from srum.config import LearnerConfig, RewardConfig
from srum.learner.learner import Learner
from srum.models import load_model
from srum.records import Judgement, Rollout


@pytest.fixture(scope="module")
def policy():
    return load_model("builtin")


def judgements(values):
    return [Judgement(rollout_id=str(i), global_score=0.0, reward_map=np.full((32, 32), v, np.float32)) for i, v in enumerate(values)]


def test_token_weights_centre_each_prompts_samples(policy):
    w = Learner(policy, LearnerConfig(), RewardConfig(centre="prompt"), group=2).token_weights(judgements([0.2, 0.6, 0.5, 0.5]))
    assert w.shape == (4, policy.token_grid ** 2)
    assert np.allclose(w[:, 0].numpy(), [-0.2, 0.2, 0.0, 0.0])


def test_shuffle_control_gives_each_sample_another_sample_of_its_prompts_judgement(policy):
    values = np.linspace(0, 1, 16)  # 4 prompts x 4 samples
    plain = Learner(policy, LearnerConfig(), RewardConfig(centre="none"), group=4).token_weights(judgements(values))[:, 0].numpy()
    shuffled = Learner(policy, LearnerConfig(), RewardConfig(centre="none", shuffle=True), group=4).token_weights(judgements(values))[:, 0].numpy()
    for g in range(4):  # the same weights within each prompt's group ...
        assert np.allclose(np.sort(shuffled[4 * g : 4 * g + 4]), plain[4 * g : 4 * g + 4])
    assert not np.isclose(shuffled, plain).any()  # ... and no sample keeps its own


def test_shuffle_control_refuses_one_sample_per_prompt(policy):
    with pytest.raises(ValueError, match="reward.shuffle needs several samples per prompt"):
        Learner(policy, LearnerConfig(), RewardConfig(centre="none", shuffle=True), group=1)


def test_per_prompt_centring_refuses_one_sample_per_prompt(policy):
    with pytest.raises(ValueError, match="needs several samples per prompt"):
        Learner(policy, LearnerConfig(), RewardConfig(centre="prompt"), group=1)


def test_one_step_is_one_optimiser_step_and_one_version():
    model = load_model("builtin")
    tokens = np.random.default_rng(0).integers(0, 64, size=(4, model.token_grid ** 2)).astype(np.int64)
    batch = [(Rollout(str(i), "a red circle", "single", np.zeros((32, 32, 3), np.uint8), tokens[i]), j)
             for i, j in enumerate(judgements([0.2, 0.9, 0.5, 0.7]))]
    start = model.flatten_parameters().clone()
    learner = Learner(model, LearnerConfig(), RewardConfig(centre="none"))
    m = learner.step(batch, torch.Generator().manual_seed(0))
    assert learner.version == 1 and model.policy_version == 1
    assert set(m) >= {"total", "reward_term", "kl_term", "grad_norm", "weight_mean"}
    assert not torch.equal(learner.weights_buffer, start)


def bf16_learner(lr: float):
    model = load_model("builtin")
    model.net.to(torch.bfloat16)
    return model, Learner(model, LearnerConfig(lr=lr), RewardConfig(centre="none"))


def test_a_bf16_model_steps_fp32_masters_and_runs_them_rounded(tmp_path):
    """Updates below a bf16 ulp accumulate in the fp32 masters (they would vanish stepping bf16 weights); the weights
    the generators run are the masters rounded; a checkpoint keeps the masters, so a resume is exact."""
    model, learner = bf16_learner(lr=1e-5)
    tokens = np.random.default_rng(0).integers(0, 64, size=(4, model.token_grid ** 2)).astype(np.int64)
    batch = [(Rollout(str(i), "a red circle", "single", np.zeros((32, 32, 3), np.uint8), tokens[i]), j)
             for i, j in enumerate(judgements([0.2, 0.9, 0.5, 0.7]))]
    assert learner.weights_buffer.dtype == torch.bfloat16 and all(m.dtype == torch.float32 for m in learner.master)
    start = [m.clone() for m in learner.master]
    for _ in range(3):
        learner.step(batch, torch.Generator().manual_seed(0))
    moved = sum(int((m != s).sum()) for m, s in zip(learner.master, start))
    assert moved > 0  # the masters learned ...
    for m, p in zip(learner.master, learner.params):
        assert torch.equal(p.detach(), m.to(torch.bfloat16))  # ... and the model runs them rounded
    learner.save(tmp_path / "learner.safetensors", {})
    _, again = bf16_learner(lr=1e-5)
    for p, q in zip(again.params, learner.params):
        p.data.copy_(q.detach())  # the checkpoint's (rounded) weights, as a resume loads them
    again.load(tmp_path / "learner.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(again.master, learner.master)) and again.version == 3


def test_a_bf16_learner_refuses_a_checkpoint_without_masters(tmp_path):
    model, fp32 = load_model("builtin"), None
    fp32 = Learner(model, LearnerConfig(), RewardConfig(centre="none"))
    fp32.save(tmp_path / "learner.safetensors", {})
    _, bf16 = bf16_learner(lr=1e-5)
    with pytest.raises(ValueError, match="no fp32 master"):
        bf16.load(tmp_path / "learner.safetensors")
