"""The CUDA path of the mixture-of-transformers model (`builtin-mot`) and its pretraining (skipped without a GPU: `pytest -m gpu` on a
GPU host). The CPU path of the same code runs in every other test."""

import numpy as np
import pytest
import torch

from srum.config import LearnerConfig, RewardConfig
from srum.learner.learner import Learner
from srum.models import load_model
from srum.models.mot_pretrain import PretrainConfig, pretrain
from srum.records import Judgement
from srum.rewards.reward_map import pool_to_tokens
from tests.conftest import TINY

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_generate_judge_and_learn_on_cuda():
    cpu, gpu = load_model("builtin-mot"), load_model("builtin-mot", "cuda")
    assert gpu.device.type == "cuda"
    a, b = cpu.generate(["a red square"], n=2, seed=0), gpu.generate(["a red square"], n=2, seed=0)
    # same seed, same noise (drawn on the CPU): the same images up to float rounding of the two devices
    assert np.abs(a[0].latent - b[0].latent).max() < 1e-2
    q = [gpu.question("a red square")] * 2
    imgs = np.stack([r.image for r in b])
    assert np.allclose(cpu.judge_yes_prob(imgs, q), gpu.judge_yes_prob(imgs, q), atol=1e-3)
    learner = Learner(gpu, LearnerConfig(lr=1e-3), RewardConfig(centre="none"))
    before = gpu.flat_weights().cpu()
    js = [Judgement(r.id, 0.5, [], np.full((32, 32), 0.75, np.float32)) for r in b]
    m = learner.step(list(zip(b, js)), torch.Generator().manual_seed(0))
    assert np.isfinite(m["total"]) and not torch.equal(before, gpu.flat_weights().cpu())
    assert learner.weights_buffer.is_cuda and pool_to_tokens(np.stack([j.reward_map for j in js]), gpu.token_grid).shape == (2, 64)


def test_pretraining_on_cuda_with_data_workers(tmp_path):
    cfg = PretrainConfig(model=TINY, steps=3, gen_batch=8, und_batch=8, warmup=1, checkpoint_every=2, device="cuda", workers=2)
    model = pretrain(cfg, tmp_path / "run", log=lambda *_: None)
    assert model.device.type == "cuda"
    assert load_model(tmp_path / "run" / "model").flat_weights().shape == model.flat_weights().shape
