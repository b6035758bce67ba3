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


def test_shuffle_control_keeps_the_weights_but_not_their_samples(policy):
    values = np.linspace(0, 1, 16)
    plain = Learner(policy, LearnerConfig(), RewardConfig(centre="none")).token_weights(judgements(values))[:, 0].numpy()
    shuffled = Learner(policy, LearnerConfig(), RewardConfig(centre="none", shuffle=True)).token_weights(judgements(values))[:, 0].numpy()
    assert np.allclose(np.sort(shuffled), plain)  # the same weights ...
    assert not np.allclose(shuffled, plain)  # ... on other samples


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
