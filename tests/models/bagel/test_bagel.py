"""The BAGEL backend on tiny random release directories (96 x 96 images, bf16 ema, fp32 ae)."""

import numpy as np
import pytest
import torch

from srum.models.bagel import BagelSampleOptions, BagelUMM
from srum.models.bagel.sampling import flow_schedule, renormalised

from . import tiny

FAST = BagelSampleOptions(steps=3)
PROMPTS = ["a red circle", "two blue squares left of a yellow star"]


def test_loads_strictly_with_the_release_quirks(bagel_model):
    m = bagel_model
    assert m.cfg.vit.num_hidden_layers == tiny.VIT["num_hidden_layers"] - 1  # the file says one layer more
    assert m.cfg.max_latent_size == tiny.LATENT_SIDE  # from the table's rows, not config.json's 32
    assert m.cfg.ae == tiny.AE  # widths read from ae.safetensors
    assert m.weights_dtype == torch.bfloat16 and m.dtype == torch.float32
    assert m.image_size == 96 and m.token_grid == 6
    assert not m.net.latent_pos_embed.pos_embed.requires_grad  # the sin-cos tables stay as loaded


def test_sample_shapes_and_seeds(bagel_model):
    images, latents = bagel_model.sample(PROMPTS, 0, FAST)
    assert images.shape == (2, 96, 96, 3) and images.dtype == np.uint8
    assert latents.shape == (2, 36, 16) and latents.dtype == np.float32
    again, latents_again = bagel_model.sample(PROMPTS, 0, FAST)
    assert np.array_equal(images, again) and np.array_equal(latents, latents_again)
    _, other = bagel_model.sample(PROMPTS, 1, FAST)
    assert not np.allclose(latents, other)
    assert not np.allclose(latents[0], latents[1])  # the prompts condition the flow


def test_sample_batched_equals_one_by_one_and_any_size(bagel_model):
    _, both = bagel_model.sample(PROMPTS, 3, FAST)
    bagel_model.sample_batch = 1
    try:
        _, single = bagel_model.sample(PROMPTS, 3, FAST)
    finally:
        bagel_model.sample_batch = 8
    np.testing.assert_allclose(both, single, atol=1e-5)
    images, latents = bagel_model.sample(PROMPTS[:1], 0, BagelSampleOptions(steps=2, height=48, width=80))
    assert images.shape == (1, 48, 80, 3) and latents.shape == (1, 15, 16)
    with pytest.raises(ValueError, match="multiples of 16 up to 96"):
        bagel_model.sample(PROMPTS[:1], 0, BagelSampleOptions(steps=2, height=112))


def test_guidance_interval_and_renorm(bagel_model):
    _, plain = bagel_model.sample(PROMPTS, 0, BagelSampleOptions(steps=3, cfg_scale=1.0))
    _, guided = bagel_model.sample(PROMPTS, 0, BagelSampleOptions(steps=3, cfg_scale=4.0, cfg_interval=(0.0, 1.0)))
    _, outside = bagel_model.sample(PROMPTS, 0, BagelSampleOptions(steps=3, cfg_scale=4.0, cfg_interval=(1.0, 1.0)))
    assert not np.allclose(plain, guided)
    np.testing.assert_array_equal(plain, outside)  # guidance only for t in (lo, hi]
    v_cond, v_guided = torch.randn(2, 5, 8), 3 * torch.randn(2, 5, 8)
    for kind, dims in (("global", (1, 2)), ("channel", (-1,))):
        out = renormalised(v_cond, v_guided, kind, 0.0)
        assert (out.norm(dim=dims) <= v_cond.norm(dim=dims) + 1e-5).all()
    assert torch.equal(renormalised(v_cond, v_guided, "global", 1.0), v_guided)  # min 1: renorm off


def test_schedule_is_bagels():
    t = flow_schedule(49, 3.0)
    assert len(t) == 50 and t[0] == 1 and t[-1] == 0
    u = 1 - 25 / 49
    assert abs(float(t[25]) - 3 * u / (1 + 2 * u)) < 1e-6 and float(t[25]) > u  # shifted toward noise


def test_cached_prompt_equals_one_full_sequence(bagel_model):
    """The KV reuse is exact: prompt cache + image block = one pass over prompt and image block together."""
    m = bagel_model
    g = torch.Generator().manual_seed(0)
    x_t, t, _ = m.flow_inputs(torch.randn(2, 36, 16, generator=g), g)
    with torch.no_grad():
        cached = m.velocity(x_t, t, PROMPTS)
        full = torch.stack([full_sequence_velocity(m, x_t[i], t[i], p) for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


def full_sequence_velocity(m, x_t, t, prompt):
    net, sp = m.net, m.special
    ids = torch.tensor([sp["bos"], *m.text_ids(prompt), sp["eos"]])
    length, n = len(ids), x_t.shape[0]
    text = net.lm.embed_tokens(ids)
    marks = net.lm.embed_tokens(torch.tensor([sp["start_of_image"], sp["end_of_image"]]))
    x = torch.cat([text, marks[:1], net.latent_embeds(x_t[None], t[None], 6, 6)[0], marks[1:]])[None]
    total = length + n + 2
    positions = torch.cat([torch.arange(length), torch.full((n + 2,), length)])[None]
    gen = torch.zeros(1, total, dtype=torch.bool)
    gen[0, length + 1 : -1] = True
    mask = torch.ones(total, total, dtype=torch.bool).tril()
    mask[length:, length:] = True
    h, _ = net.lm(x, positions, gen, mask[None, None])
    return net.llm2vae(h[0, length + 1 : -1])


def test_judge_probabilities_batched(bagel_model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    questions = [bagel_model.question(p) for p in ("a red circle", "a blue square", "two stars above a triangle")]
    p = bagel_model.judge_yes_prob(images, questions)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    one_by_one = np.concatenate([bagel_model.judge_yes_prob(images[i : i + 1], questions[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(p, one_by_one, atol=1e-5)
    assert not np.allclose(p[0], p[1])
    mixed = bagel_model.answer_logits([images[0], images[1, :64]], questions[:2])  # two sizes, one call
    assert mixed.shape == (2, 2) and torch.isfinite(mixed).all()


def test_velocity_trains_only_the_generation_expert(bagel_release):
    m = BagelUMM.load(bagel_release)
    names = set(m.trainable("generation"))
    assert names and all("_moe_gen" in n or n.split(".")[0] in ("time_embedder", "vae2llm", "llm2vae", "latent_pos_embed")
                         for n in names)
    for n, p in m.net.named_parameters():
        p.requires_grad_(n in names)
    _, latents = m.sample(PROMPTS, 0, FAST)
    x_t, t, target = m.flow_inputs(latents, torch.Generator().manual_seed(1))
    assert x_t.shape == target.shape == (2, 36, 16) and ((t > 0) & (t < 1)).all()
    ((m.velocity(x_t, t, PROMPTS) - target) ** 2).mean().backward()
    grads = {n for n, p in m.net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads <= names
    assert any("q_proj_moe_gen" in n for n in grads) and "llm2vae.weight" in grads and "vae2llm.weight" in grads
    with pytest.raises(ValueError, match="understanding expert"):
        m.trainable("all")


def test_reference_shares_the_understanding_side(bagel_release):
    m = BagelUMM.load(bagel_release)
    ref = m.make_reference()
    ours, theirs = dict(m.net.named_parameters()), dict(ref.net.named_parameters())
    gen = set(m.generation_names())
    assert all((ours[n] is theirs[n]) == (n not in gen) for n in ours)
    flat = m.flatten_parameters()
    assert flat.numel() == sum(ours[n].numel() for n in gen)
    with torch.no_grad():
        flat.add_(0.01)
    x_t, t, _ = m.flow_inputs(torch.randn(1, 36, 16), torch.Generator().manual_seed(0))
    with torch.no_grad(), m.reference_view(ref) as r:
        assert not torch.allclose(m.velocity(x_t, t, PROMPTS[:1]), r.velocity(x_t, t, PROMPTS[:1]))
    m.load_flat_weights(ref.flat_weights(), version=7)
    assert m.policy_version == 7 and torch.equal(m.flat_weights(), ref.flat_weights())
    with pytest.raises(ValueError, match="values"):
        m.load_flat_weights(flat[:-1])


def test_save_load_round_trip_is_bit_identical(bagel_release, tmp_path):
    m = BagelUMM.load(bagel_release)
    m.policy_version = 3
    m.save(tmp_path / "saved")
    back = BagelUMM.load(tmp_path / "saved")
    assert back.policy_version == 3
    for a, b in ((m.net.state_dict(), back.net.state_dict()), (m.ae.state_dict(), back.ae.state_dict())):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for f in ("tokenizer.json", "vocab.json", "merges.txt", "llm_config.json", "vit_config.json", "config.json"):
        assert (tmp_path / "saved" / f).read_bytes() == (bagel_release / f).read_bytes()
    m.save(tmp_path / "saved")  # over an existing directory: replaced whole
    assert BagelUMM.load(tmp_path / "saved").policy_version == 3


def test_lora_on_the_generation_expert(bagel_release, tmp_path):
    m = BagelUMM.load(bagel_release)
    m.add_lora(rank=2, alpha=4.0)
    names = m.trainable("lora")
    assert names and all("lora_" in n and "_moe_gen" in n for n in names)
    assert sum(p.numel() for p in m.synced) == m.flat_weights().numel()
    with torch.no_grad():
        for n, p in m.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # peft starts B at zero: make the adapters matter
    x_t, t, _ = m.flow_inputs(torch.randn(1, 36, 16), torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = m.velocity(x_t, t, PROMPTS[:1])
        with m.reference_view(m.make_reference()) as base:
            assert not torch.allclose(v, base.velocity(x_t, t, PROMPTS[:1]))
    m.save(tmp_path / "merged", dtype=torch.float32)
    merged = BagelUMM.load(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged.velocity(x_t, t, PROMPTS[:1]), v, atol=1e-5, rtol=1e-4)
