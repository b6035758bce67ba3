"""The Janus built-in's pretraining: the patch dictionary and tokenizer, the data, determinism and resume."""

import json
import random

import numpy as np
import pytest
import torch

from srum.pretrain import JanusPretrainConfig, pretrain
from srum.pretrain.losses import gen_batch, token_edit, und_batch
from srum.pretrain.patches import IGNORE, PatchDictionary, patches, renders
from srum.world import passes, training_spec

TINY = {"shape": {"hidden": 32, "layers": 1, "heads": 2, "mlp": 64, "vision_hidden": 32, "vision_layers": 1,
                  "vision_heads": 2, "codebook": 128, "vq_latent": 32},
        "tokenizer": {"steps": 4, "batch": 8, "dictionary_renders": 300}, "steps": 4, "gen_batch": 8, "und_batch": 8,
        "checkpoint_every": 2, "threads": 1, "warmup": 2}


def tiny(**extra) -> JanusPretrainConfig:
    return JanusPretrainConfig.model_validate({**TINY, **extra})


def test_patch_dictionary_names_the_commonest_patches_first():
    d = PatchDictionary(0, 200, 50, 4)
    assert len(d.code) == 50 and d.seen > 50
    imgs, _ = renders(0, 0, 4)
    t = d.targets(imgs)
    assert t.shape == (4, 64)
    black = np.zeros((1, 32, 32, 3), np.uint8)
    assert (d.targets(black) == 0).all()  # background is the commonest patch: code 0
    odd = black.copy()
    odd[0, :4, :4] = 17  # a patch no render has
    assert d.targets(odd)[0, 0] == IGNORE


def test_patches_are_in_token_order():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 4:8, 8:12] = 255  # row 1, column 2 of the 8 x 8 grid
    p = patches(img, 4)
    assert p.shape == (1, 64, 48) and np.flatnonzero(p[0].any(1)).tolist() == [1 * 8 + 2]


def test_data_is_a_pure_function_of_seed_and_step():
    cfg = tiny()
    a, b = gen_batch(cfg, 3), gen_batch(cfg, 3)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], gen_batch(cfg, 4)[0])
    assert all(passes(img, training_spec(cfg.seed, 3 * cfg.gen_batch + i, scenes=cfg.scenes)) for i, img in enumerate(a[0]))


def test_understanding_labels_follow_the_world(tiny_janus32_dir):
    from srum.models import load_model
    from srum.world import parse

    model = load_model(tiny_janus32_dir)
    cfg = tiny(und_batch=24, und_token_edits=0.5)
    imgs, texts, labels = und_batch(cfg, 0, model)
    assert imgs.shape == (24, 32, 32, 3) and len(texts) == 24
    assert all(bool(y) == passes(img, parse(t)) for img, t, y in zip(imgs, texts, labels))
    again = und_batch(cfg, 0, model)
    assert np.array_equal(again[0], imgs) and np.array_equal(again[2], labels)


def test_token_edits_change_tokens_not_the_canvas(tiny_janus32_dir):
    from srum.models import load_model

    model = load_model(tiny_janus32_dir)
    imgs, _ = renders(0, 0, 4)
    out = token_edit(model, imgs, random.Random(0))
    assert out.shape == imgs.shape and out.dtype == np.uint8


@pytest.mark.slow
def test_pretrain_is_deterministic_and_resumes_exactly(tmp_path):
    a = pretrain(tiny(), tmp_path / "a", log=lambda *_: None)
    b = pretrain(tiny(), tmp_path / "b", log=lambda *_: None)
    assert torch.equal(a.flat_weights(), b.flat_weights())
    # stop after 2 model steps (the time budget counts this run), then the same command goes on
    half = tiny(steps=4)
    pretrain(half.model_copy(update={"steps": 4, "time_budget_min": 1e-9}), tmp_path / "c", log=lambda *_: None)
    state = json.loads((tmp_path / "c" / "model" / "pretrain_stats.json").read_text())
    assert state["model"]["steps"] < 4
    c = pretrain(half, tmp_path / "c", log=lambda *_: None)
    assert torch.equal(a.flat_weights(), c.flat_weights())
    stats = json.loads((tmp_path / "a" / "model" / "pretrain_stats.json").read_text())
    assert stats["model"]["steps"] == 4 and stats["tokenizer"]["steps"] == 4 and stats["peak_rss_mb"] > 0
    assert 0 <= stats["tokenizer"]["round_trip_pass_rate_1000"] <= 1
    # the model directory is what transformers loads
    from transformers import JanusForConditionalGeneration

    JanusForConditionalGeneration.from_pretrained(tmp_path / "a" / "model", local_files_only=True)


def test_cpu_bf16_stage_is_deterministic_and_really_bf16(tmp_path):
    """cpu_bf16 runs stage 2 under bf16 autocast: the same weights for the same seed, not those of fp32 (its
    tokenizer stage, in fp32, is the same bytes)."""
    fp32 = pretrain(tiny(cpu_bf16=False), tmp_path / "fp32", log=lambda *_: None)
    a = pretrain(tiny(cpu_bf16=True), tmp_path / "a", log=lambda *_: None)
    b = pretrain(tiny(cpu_bf16=True), tmp_path / "b", log=lambda *_: None)
    assert torch.equal(a.flat_weights(), b.flat_weights())
    assert not torch.equal(a.flat_weights(), fp32.flat_weights())
    vq = lambda m: m.net.model.vqmodel.state_dict()  # noqa: E731
    assert all(torch.equal(v, vq(fp32)[k]) for k, v in vq(a).items())
    assert all(p.dtype == torch.float32 for p in a.net.parameters())  # the weights stay fp32


def test_understanding_losses_read_the_answer_at_the_question_mark(tiny_janus32_dir):
    """With the description after the answer, the yes/no logits are still read where the question ends, and
    the grounding loss reaches the vision tower."""
    from srum.models import load_model
    from srum.pretrain.losses import GroundingHead, understanding_loss

    model = load_model(tiny_janus32_dir)
    imgs, texts, labels = und_batch(tiny(und_batch=6), 0, model)
    plain = understanding_loss(model, imgs, texts, labels)
    head = GroundingHead(model.net.config.vision_config.hidden_size)
    described = understanding_loss(model, imgs, texts, labels, describe_coef=0.5, ground=head)
    assert torch.allclose(plain[0], described[0])  # the same answer logits either way
    assert plain[3] is None and described[3] > 0 and described[4] > 0
    related = understanding_loss(model, imgs, texts, labels, describe_coef=0.5, relations=True)
    assert torch.allclose(related[0], described[0]) and not torch.isclose(related[3], described[3])  # longer targets
    described[4].backward()
    assert model.net.model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_pretraining_trains_the_answer_the_judge_reads(tiny_janus32_dir):
    """The yes/no loss is made of exactly the logits `answer_logits` reads when judging, with or without the
    description after the answer."""
    import torch.nn.functional as F

    from srum.models import load_model
    from srum.pretrain.losses import understanding_loss

    model = load_model(tiny_janus32_dir)
    imgs, texts, labels = und_batch(tiny(und_batch=6), 1, model)
    with torch.no_grad():
        a = model.answer_logits(imgs, [model.question(t) for t in texts])
        y = torch.as_tensor(labels)
        pos = y.mean().clamp(0.05, 0.95)
        want = F.binary_cross_entropy_with_logits(a[:, 0] - a[:, 1], y, weight=torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos)))
        for coef in (0.0, 0.5):
            assert torch.allclose(understanding_loss(model, imgs, texts, labels, describe_coef=coef)[0], want, atol=1e-5)


def test_pretrain_continues_from_a_trained_model_of_its_shape(tmp_path):
    a = pretrain(tiny(), tmp_path / "a", log=lambda *_: None)
    b = pretrain(tiny(init_from=str(tmp_path / "a" / "model"), steps=2, und_free_layouts=0.5), tmp_path / "b", log=lambda *_: None)
    vq = lambda m: m.net.model.vqmodel.state_dict()  # noqa: E731
    assert all(torch.equal(v, vq(a)[k]) for k, v in vq(b).items())  # its tokenizer, not a new one
    assert not torch.equal(a.flat_weights(), b.flat_weights())  # and trained on from there
    stats = json.loads((tmp_path / "b" / "model" / "pretrain_stats.json").read_text())
    assert stats["tokenizer"]["continued_from"] == str(tmp_path / "a" / "model") and stats["model"]["steps"] == 2
    wider = tiny(init_from=str(tmp_path / "a" / "model"), shape={**TINY["shape"], "hidden": 64, "mlp": 128})
    with pytest.raises(ValueError, match="init_from: .* another shape or vocabulary"):
        pretrain(wider, tmp_path / "c", log=lambda *_: None)
    from srum.models import ModelDirError

    with pytest.raises(ModelDirError, match="nothing: no such model directory"):  # a wrong path is named
        pretrain(tiny(init_from=str(tmp_path / "nothing")), tmp_path / "d", log=lambda *_: None)


def test_with_scenes_no_validation_or_test_scene_reaches_a_loss(tiny_janus32_dir):
    """The walk of issue 37 over pretraining's own batches and the SRUM stream: with `scenes` on, every prompt asked
    or drawn is of a training scene and no image shows a validation or test scene (scene split: srum/world/scenes.py)."""
    from srum.models import load_model
    from srum.rollout.sources import prompt_source
    from srum.world.scenes import is_training_prompt, shows_heldout

    cfg = tiny(scenes=True, gen_batch=64, und_batch=64, und_token_edits=0.5)
    model = load_model(tiny_janus32_dir)
    for step in range(6):
        imgs, prompts, _ = gen_batch(cfg, step)
        assert all(is_training_prompt(p) for p in prompts) and not any(shows_heldout(x) for x in imgs)
        imgs, texts, _ = und_batch(cfg, step, model)
        assert all(is_training_prompt(t) for t in texts) and not any(shows_heldout(x) for x in imgs)
        imgs, specs = renders(cfg.seed, step, 64, scenes=True)
        assert all(is_training_prompt(s) for s in specs)
    stream = prompt_source("compworld", 0, scenes=True).take(0, 5000)
    assert all(is_training_prompt(it.prompt) for it in stream)
    assert not all(is_training_prompt(it.prompt) for it in prompt_source("compworld", 0).take(0, 5000))  # off: it can
