"""The CUDA path of the Janus backend (bf16 autocast) and its pretraining, skipped without a GPU (`pytest -m gpu`
on a GPU host). The CPU path of the same code runs in every other Janus test."""

import numpy as np
import pytest
import torch

from srum.config import LearnerConfig, RewardConfig
from srum.learner.learner import Learner
from srum.models import load_model
from srum.pretrain import JanusPretrainConfig, pretrain
from srum.records import Judgement
from srum.rollout.draw import draw_rollouts

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_generate_judge_and_learn_on_cuda(tiny_janus32_dir):
    cpu, gpu = load_model(tiny_janus32_dir), load_model(tiny_janus32_dir, "cuda")
    assert gpu.device.type == "cuda"
    rollouts = draw_rollouts(gpu, ["a red square"] * 2, n=2, seed=0)
    assert all(r.image.shape == (32, 32, 3) for r in rollouts)
    imgs = np.stack([r.image for r in rollouts])
    q = [gpu.question("a red square")] * len(imgs)
    # bf16 matmuls on the GPU against fp32 on the CPU: the same answer up to bf16 rounding
    assert np.allclose(cpu.judge_yes_prob(imgs, q), gpu.judge_yes_prob(imgs, q), atol=2e-2)
    learner = Learner(gpu, LearnerConfig(lr=1e-3), RewardConfig(centre="none"))
    before = gpu.flat_weights().cpu()
    js = [Judgement(r.id, 0.5, [], np.full((32, 32), 0.75, np.float32)) for r in rollouts]
    m = learner.step(list(zip(rollouts, js)), torch.Generator().manual_seed(0))
    assert np.isfinite(m["total"]) and not torch.equal(before, gpu.flat_weights().cpu())


def test_pretraining_on_cuda(tmp_path):
    from tests.pretrain.test_janus import TINY

    cfg = JanusPretrainConfig.model_validate({**TINY, "device": "cuda"})
    pretrain(cfg, tmp_path / "run", log=lambda *_: None)
    assert load_model(tmp_path / "run" / "model", "cuda").device.type == "cuda"
