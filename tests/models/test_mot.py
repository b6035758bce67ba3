import json

import numpy as np
import pytest
import torch

from srum.models import SampleOptions, load_model
from srum.models.mot import MotUMM
from srum.models.mot_net import patchify, unpatchify
from srum.models.tokenizer import WordTokenizer
from tests.conftest import TINY

PROMPTS = ["a red square", "two blue circles above a green triangle"]


def test_generate_shapes_and_determinism(tiny_model):
    a = tiny_model.generate(PROMPTS, n=2, seed=5, opts=SampleOptions(steps=3))
    b = tiny_model.generate(PROMPTS, n=2, seed=5, opts=SampleOptions(steps=3))
    c = tiny_model.generate(PROMPTS, n=2, seed=6, opts=SampleOptions(steps=3))
    assert len(a) == 4 and a[0].image.shape == (32, 32, 3) and a[0].image.dtype == np.uint8
    assert a[0].latent.shape == (64, 48) and a[2].category == "complex"
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))


def test_sde_sampler_differs_from_ode_but_is_seeded(tiny_model):
    ode = tiny_model.generate(PROMPTS, seed=1, opts=SampleOptions(steps=4))
    sde = tiny_model.generate(PROMPTS, seed=1, opts=SampleOptions(steps=4, eta=0.7))
    sde2 = tiny_model.generate(PROMPTS, seed=1, opts=SampleOptions(steps=4, eta=0.7))
    assert not np.array_equal(ode[0].latent, sde[0].latent)
    assert np.array_equal(sde[0].latent, sde2[0].latent)


def test_save_load_round_trip_is_bit_identical(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["kind"] == "mot"
    loaded = load_model(tmp_path / "m")
    opts = SampleOptions(steps=3)
    for x, y in zip(tiny_model.generate(PROMPTS, 2, 9, opts), loaded.generate(PROMPTS, 2, 9, opts)):
        assert np.array_equal(x.latent, y.latent)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    qs = [tiny_model.question(p) for p in PROMPTS]
    assert np.array_equal(tiny_model.judge_yes_prob(imgs, qs), loaded.judge_yes_prob(imgs, qs))
    assert not list((tmp_path / "m").glob(".*.tmp"))  # atomic writes leave no temp files


def test_flat_weights_round_trip(tiny_model):
    flat = tiny_model.flat_weights()
    other = MotUMM(tiny_model.cfg)
    other.load_flat_weights(flat, version=7)
    assert torch.equal(other.flat_weights(), flat) and other.policy_version == 7
    with pytest.raises(ValueError, match="flat weights have"):
        other.load_flat_weights(flat[:-1])


def test_flattened_parameters_are_views_of_the_published_buffer():
    model = MotUMM(TINY)
    before = model.flat_weights()
    buf = model.flatten_parameters()
    assert torch.equal(buf, before)
    opt = torch.optim.AdamW(model.net.parameters(), lr=1e-2)
    model.velocity(torch.randn(2, TINY.grid**2, TINY.patch_dim), torch.rand(2), model.text_ids(["a red square"] * 2)).square().mean().backward()
    opt.step()
    assert torch.equal(model.flat_weights(), buf)  # the optimiser updated the buffer itself
    assert not torch.equal(buf, before)


def test_judge_probabilities_in_range(tiny_model):
    imgs = np.zeros((3, 32, 32, 3), np.uint8)
    p = tiny_model.judge_yes_prob(imgs, [tiny_model.question("a red square")] * 3)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


def test_cfg_changes_the_output(tiny_model):
    a = tiny_model.generate(PROMPTS[:1], seed=2, opts=SampleOptions(steps=2, cfg_scale=1.0))
    b = tiny_model.generate(PROMPTS[:1], seed=2, opts=SampleOptions(steps=2, cfg_scale=4.0))
    assert not np.array_equal(a[0].latent, b[0].latent)


def test_patchify_inverse():
    x = torch.randn(2, 32, 32, 3)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 32), x)
    assert torch.equal(patchify(x, 4)[0, 0], x[0, :4, :4].reshape(-1))


def test_tokenizer_errors_are_clear():
    tok = WordTokenizer.default()
    with pytest.raises(ValueError, match="'pink'"):
        tok.batch(["a pink square"], 12)
    with pytest.raises(ValueError, match="at most 3"):
        tok.batch(["a red square"], 3)


def test_missing_model_dir_is_clear(tmp_path):
    from srum.io import InputError

    with pytest.raises(InputError, match="not a model directory"):
        load_model(tmp_path)


def test_refine_head_starts_as_the_identity_on_the_coarse_velocity():
    from srum.models.mot_net import MotNet
    from tests.conftest import TINY

    torch.manual_seed(0)
    plain = MotNet(TINY.model_copy(update={"refine_channels": 0}))
    refined = MotNet(TINY)
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"gen_feat", "gen_refine"}
    with torch.no_grad():
        plain.gen_out.weight.normal_(0, 0.05)
        refined.gen_out.weight.copy_(plain.gen_out.weight)
    x, t, ids = torch.randn(2, 64, 48), torch.rand(2), torch.ones(2, 12, dtype=torch.long)
    assert torch.equal(plain.velocity(x, t, ids, 0), refined.velocity(x, t, ids, 0))


def test_palette_channels_name_the_nearest_paint_or_none():
    from srum.models.mot_net import palette_onehot

    pixels = np.array([[[230, 30, 30], [0, 0, 0], [120, 120, 120], [200, 60, 60]]], np.uint8)  # red, black, grey, near red
    onehot = palette_onehot(torch.as_tensor(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1)[0, :, 0]
    assert onehot[:, 0].tolist() == [0, 1, 0, 0, 0, 0, 0]  # channel 0 is black, 1.. the paints in spec order
    assert onehot[:, 1].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert onehot[:, 2].sum() == 0  # farther than 80 from every reference: background, no channel
    assert onehot[:, 3].tolist() == [0, 1, 0, 0, 0, 0, 0]


def test_a_grown_vision_encoder_warm_starts_to_the_same_judgement(tmp_path):
    """Palette inputs and residual blocks added to a trained encoder start at zero: same answers as before."""
    import copy

    from srum.models.mot_pretrain import _warm_start

    torch.manual_seed(0)
    small = MotUMM(TINY)
    with torch.no_grad():
        for p in small.net.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # no zero-initialised weight left to hide a difference
    small.save(tmp_path / "small")
    grown = MotUMM(TINY.model_copy(update={"vision_palette": True, "vision_blocks": 2}))
    _warm_start(grown, copy.deepcopy(grown.net), tmp_path / "small", log=lambda *_: None)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    questions = [small.question(p) for p in ("a red square", "a blue circle", "two green triangles")]
    assert torch.allclose(small.answer_logits(images, questions), grown.answer_logits(images, questions), atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        _warm_start(small, copy.deepcopy(small.net), _saved(grown, tmp_path), lambda *_: None)


def _saved(model, tmp_path):
    model.save(tmp_path / "grown")
    return tmp_path / "grown"


def test_taking_another_generation_expert_keeps_the_judge_exactly():
    torch.manual_seed(0)
    judge, donor = MotUMM(TINY), MotUMM(TINY)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    questions = [judge.question(p) for p in PROMPTS]
    before = judge.answer_logits(images, questions)
    judge.take_generation_expert(donor)
    assert torch.equal(before, judge.answer_logits(images, questions))
    mine, theirs = judge.net.state_dict(), donor.net.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in judge.generation_parameters())
    assert not torch.equal(mine["tok_emb.weight"], theirs["tok_emb.weight"])  # the shared text side stays the judge's
