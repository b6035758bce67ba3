"""The BAGEL backend inside the loop's pieces, fast (no engine, no Ray): the configuration's sampling options reach
its sampler, rollouts keep the clean latent, a learner step at a non-default size, LoRA (adapters only broadcast,
a generator samples with them), checkpoints that resume bit-exactly in both training modes, and what
`srum train` refuses before it starts."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from srum.config import ConfigError, LearnerConfig, RewardConfig, SamplingConfig, TrainConfig, load_config
from srum.io import ModelDirError
from srum.learner.checkpoints import read_checkpoint, write_checkpoint
from srum.learner.learner import Learner
from srum.models import TRAIN_MODES, SampleOptions, load_model
from srum.models.bagel import BagelUMM
from srum.records import Judgement
from srum.rollout.draw import draw_rollouts
from srum.stages import load_weights

PROMPTS = ["a red square", "two blue circles"]
FAST = SampleOptions(steps=2, height=64, width=64)


def judged(rollouts, seed=0):
    """Judgements with random reward maps at the images' size (what a judge would write)."""
    rng = np.random.default_rng(seed)
    return [Judgement(r.id, 0.0, reward_map=rng.random(r.image.shape[:2]).astype(np.float32)) for r in rollouts]


def learner_for(model, train="generation"):
    return Learner(model, LearnerConfig(train=train, lr=0.01), RewardConfig(centre="batch"), group=1)


def lora_model(release):
    m = BagelUMM.load(release)
    m.add_lora(rank=2, alpha=4.0)
    return m


def test_train_modes_table_matches_the_backends():
    from srum.models.janus import JanusUMM
    from srum.models.janus.model import TRAIN_MODES as JANUS_MODES

    assert TRAIN_MODES["bagel"] == BagelUMM.train_modes and TRAIN_MODES["janus"] == JANUS_MODES
    for cls, name in ((BagelUMM, "bagel"), (JanusUMM, "janus")):
        assert ("lora" in TRAIN_MODES[name]) == hasattr(cls, "add_lora")


def test_config_sampling_reaches_bagel_and_janus_defaults_stay(bagel_model):
    assert SampleOptions.of(SamplingConfig()) == SampleOptions()  # every new field None: janus samples as before
    cfg = load_config(TrainConfig, None, ["rollout.sampling.height=64", "rollout.sampling.width=48",
                                          "rollout.sampling.steps=2", "rollout.sampling.timestep_shift=1.0",
                                          "rollout.sampling.cfg_interval=[0.0, 1.0]", "rollout.sampling.cfg_renorm_type=channel",
                                          "rollout.sampling.cfg_renorm_min=0.5"])
    opts = SampleOptions.of(cfg.rollout.sampling)
    assert opts.cfg_interval == (0.0, 1.0) and opts.cfg_renorm_type == "channel"
    images, latents = bagel_model.sample(PROMPTS[:1], 0, opts)
    assert images.shape == (1, 64, 48, 3) and latents.shape == (1, 4 * 3, 16)
    shifted = bagel_model.sample(PROMPTS[:1], 0, replace(opts, timestep_shift=3.0))[1]
    assert not np.array_equal(shifted, latents)  # the shift is read
    for bad in ("rollout.sampling.cfg_interval=[0.9, 0.1]", "rollout.sampling.cfg_renorm_type=other",
                "rollout.sampling.height=8"):
        with pytest.raises(ConfigError, match="rollout.sampling"):
            load_config(TrainConfig, None, [bad])


def test_rollouts_keep_the_clean_latent(bagel_model):
    rollouts = draw_rollouts(bagel_model, PROMPTS, 2, seed=5, opts=FAST)
    assert [r.prompt for r in rollouts] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    for r in rollouts:
        assert r.image.shape == (64, 64, 3) and r.latent.shape == (16, 16) and r.latent.dtype == np.float32
    decoded = bagel_model.decode(np.stack([r.latent for r in rollouts]))  # the latents are the images'
    assert np.array_equal(decoded, np.stack([r.image for r in rollouts]))
    assert not np.array_equal(rollouts[0].image, rollouts[1].image)


def test_learner_step_at_a_non_default_size_moves_only_the_generation_expert(bagel_release):
    m = BagelUMM.load(bagel_release)
    before = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    learner = learner_for(m)
    rollouts = draw_rollouts(m, PROMPTS, 2, seed=1, opts=FAST)  # 64 x 64: a 4 x 4 grid, not the default 6 x 6
    out = learner.step(list(zip(rollouts, judged(rollouts))), torch.Generator().manual_seed(0))
    assert out["total"] > 0 and learner.version == 1 and m.policy_version == 1
    gen = set(m.generation_names())
    moved = {n for n, p in m.net.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= gen and any("_moe_gen" in n for n in moved)


def test_lora_adapters_only_are_broadcast_and_the_generator_samples_with_them(bagel_release):
    learner_side, generator = lora_model(bagel_release), lora_model(bagel_release)
    assert torch.equal(learner_side.flat_weights(), generator.flat_weights())  # every process adds the same adapters
    learner = learner_for(learner_side, "lora")
    flat = learner.weights_buffer
    adapters = sum(p.numel() for n, p in learner_side.net.named_parameters() if "lora_" in n)
    expert = sum(p.numel() for n, p in learner_side.net.named_parameters() if n in set(learner_side.generation_names()))
    assert flat.numel() == adapters < expert / 10  # what is published: the adapters, not the expert
    rollouts = draw_rollouts(learner_side, PROMPTS, 2, seed=1, opts=FAST)
    base_images = generator.sample(PROMPTS, 3, FAST)[0]
    for step in range(2):  # B starts at zero: the first step moves B, the second makes the adapters matter
        learner.step(list(zip(rollouts, judged(rollouts, step))), torch.Generator().manual_seed(step))
    published = flat.numpy().copy()  # what the object store hands a generator: its own read-only buffer
    published.flags.writeable = False
    load_weights(generator, published, learner.version, share=True)  # RolloutStage.load
    assert generator.policy_version == 2
    after, theirs = generator.sample(PROMPTS, 3, FAST), learner_side.sample(PROMPTS, 3, FAST)
    assert np.array_equal(after[1], theirs[1]) and np.array_equal(after[0], theirs[0])  # the learner's own sampling
    with generator.peft.disable_adapter():  # adapters off: the base model's samples
        assert np.array_equal(generator.sample(PROMPTS, 3, FAST)[0], base_images)
    _, base_latents = lora_model(bagel_release).sample(PROMPTS, 3, FAST)
    assert not np.array_equal(after[1], base_latents)  # the update changed what the generator draws


@pytest.mark.parametrize("train", ["generation", "lora"])
def test_checkpoint_resumes_bit_exactly(bagel_release, tmp_path, train):
    """Train 2 steps straight, or 1 step, checkpoint, resume into fresh objects and 1 more: the same weights
    and optimiser state, bit for bit. LoRA: the adapters come back from adapters.safetensors and the base stays
    the initial model (the reference); full: the fp32 ema.safetensors."""
    def fresh():
        m = lora_model(bagel_release) if train == "lora" else BagelUMM.load(bagel_release)
        return m, learner_for(m, train)

    def step(model, learner, k):
        rollouts = draw_rollouts(model, PROMPTS, 2, seed=10 + k, opts=FAST)
        learner.step(list(zip(rollouts, judged(rollouts, k))), torch.Generator().manual_seed(k))

    straight, ls = fresh()
    step(straight, ls, 0)
    step(straight, ls, 1)

    first, lf = fresh()
    step(first, lf, 0)
    d = write_checkpoint(tmp_path, 1, first, lf, {"data_position": 2, "learned_ahead": []}, seed=0)
    assert (d / "model" / "adapters.safetensors").exists() == (train == "lora")
    resumed, lr = fresh()
    state = read_checkpoint(tmp_path, resumed, lr)
    assert state["step"] == 1 and lr.version == 1 and resumed.policy_version == 1
    step(resumed, lr, 1)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if train == "lora":  # the checkpoint's release holds the adapters merged: it loads as a plain BAGEL
        merged = load_model(d / "model")
        assert merged.peft is None
        x = first.sample(PROMPTS[:1], 0, FAST)[1]
        np.testing.assert_allclose(merged.sample(PROMPTS[:1], 0, FAST)[1], x, atol=1e-4)
        with pytest.raises(ModelDirError, match="written with learner.train lora"):
            BagelUMM.load(bagel_release).load_state(d / "model")
    else:
        with pytest.raises(ModelDirError, match="no adapters.safetensors"):
            lora_model(bagel_release).load_state(d / "model")


def test_train_refusals_before_anything_starts(bagel_release, tmp_path):
    from srum.cli import check_train

    def cfg(*sets):
        return load_config(TrainConfig, None, [f"model={bagel_release}", *sets])

    check_train(cfg("learner.train=lora"), tmp_path / "a")  # a backend with add_lora: accepted
    with pytest.raises(ConfigError, match=r"learner.train: all needs one of generation, lora; .* is a bagel model"):
        check_train(cfg("learner.train=all"), tmp_path / "b")
    with pytest.raises(ConfigError, match="square token grid"):
        check_train(cfg("rollout.sampling.height=64"), tmp_path / "c")
    check_train(cfg("rollout.sampling.height=64", "rollout.sampling.width=64"), tmp_path / "d")
