import json

import numpy as np
import pytest
import torch

from srum.models.mot_pretrain import PretrainConfig, pretrain, und_batch
from srum.world.oracle import MAP_COLORS, MAP_SHAPES
from tests.conftest import TINY


def tiny_cfg(steps):
    return PretrainConfig(model=TINY, steps=steps, gen_batch=4, und_batch=4, warmup=2, checkpoint_every=2, threads=1)


def test_resumed_pretraining_matches_uninterrupted(tmp_path):
    straight = pretrain(tiny_cfg(4), tmp_path / "a", log=lambda *_: None)
    pretrain(tiny_cfg(2), tmp_path / "b", log=lambda *_: None)
    resumed = pretrain(tiny_cfg(4), tmp_path / "b", log=lambda *_: None)  # picks up at step 2
    assert torch.equal(straight.flat_weights(), resumed.flat_weights())
    # stopped early on the same schedule (stop_at), then let run on: the same weights again
    pretrain(tiny_cfg(4).model_copy(update={"stop_at": 3}), tmp_path / "c", log=lambda *_: None)
    assert json.loads((tmp_path / "c" / "model" / "pretrain_stats.json").read_text())["steps"] == 3
    assert torch.equal(straight.flat_weights(), pretrain(tiny_cfg(4), tmp_path / "c", log=lambda *_: None).flat_weights())
    assert (tmp_path / "a" / "model" / "model.safetensors").exists()
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 0  # logs every 25 steps


def test_data_workers_and_und_every_are_deterministic(tmp_path):
    """Batches made in worker processes are the in-process ones; an understanding batch every k steps."""
    in_process = pretrain(tiny_cfg(4).model_copy(update={"und_every": 2}), tmp_path / "a", log=lambda *_: None)
    workers = pretrain(tiny_cfg(4).model_copy(update={"und_every": 2, "workers": 2}), tmp_path / "b", log=lambda *_: None)
    assert torch.equal(in_process.flat_weights(), workers.flat_weights())
    stats = json.loads((tmp_path / "b" / "model" / "pretrain_stats.json").read_text())
    assert stats["generation_samples"] == 16 and stats["understanding_samples"] == 8
    # a stage started from a model directory (as from the shipped checkpoint) adds to that model's record
    cfg = tiny_cfg(2).model_copy(update={"init_from": str(tmp_path / "b" / "model")})
    pretrain(cfg, tmp_path / "c", log=lambda *_: None)
    chained = json.loads((tmp_path / "c" / "model" / "pretrain_stats.json").read_text())
    assert chained["steps"] == 6 and chained["generation_samples"] == 24 and [x["steps"] for x in chained["stages"]] == [4, 2]


def test_understanding_only_stage_keeps_the_generation_expert_bit_identical(tmp_path):
    start = pretrain(tiny_cfg(2), tmp_path / "a", log=lambda *_: None)
    cfg = tiny_cfg(3).model_copy(update={"gen_batch": 0, "warmup": 0, "init_from": str(tmp_path / "a" / "model")})
    after = pretrain(cfg, tmp_path / "b", log=lambda *_: None)
    before, now = start.state_dict(), after.state_dict()
    gen = set(start.generation_parameters())
    assert gen and all(torch.equal(before[k], now[k]) for k in gen)
    assert any(not torch.equal(before[k], now[k]) for k in before if k not in gen)  # the judge did train
    stats = json.loads((tmp_path / "b" / "model" / "pretrain_stats.json").read_text())
    assert stats["generation_samples"] == 8 and stats["understanding_samples"] == 20  # 2 x 4 from stage a, then 3 x 4 more


def test_pretrain_cli_refuses_bad_schedule_and_workers(tmp_path, capsys):
    from srum.cli import main

    for key, value in (("und_every", 0), ("workers", -1), ("device", "gpu"), ("gen_batch", -1), ("ground_coef", -1)):
        assert main(["pretrain", "--set", "backend=mot", "--set", f"{key}={value}", "--out", str(tmp_path / "p")]) == 2
        assert f"--set {key}={value}: {key}:" in capsys.readouterr().err
    assert main(["pretrain", "--set", "backend=mot", "--set", "gen_batch=0", "--set", "und_every=2", "--out", str(tmp_path / "p")]) == 2
    assert "gen_batch 0 with und_every 2" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_understanding_data_has_both_labels_and_is_seeded():
    cfg = PretrainConfig(und_batch=64)
    imgs, texts, labels, targets = und_batch(cfg, 0)
    imgs2, texts2, labels2, _ = und_batch(cfg, 0)
    assert np.array_equal(imgs, imgs2) and texts == texts2 and np.array_equal(labels, labels2)
    assert targets is None  # grounding off: no targets made
    assert 0.2 < labels.mean() < 0.8


def test_token_objects_pool_the_object_map_to_the_token_grid():
    from srum.models.mot_pretrain import token_objects

    img = np.zeros((32, 32, 3), np.uint8)
    img[0:10, 0:10] = (230, 30, 30)  # a red square over patches (0..2, 0..2), the last row/column 2 px deep
    t = token_objects(img, 4).reshape(8, 8, 2)
    red_square = [MAP_COLORS.index("red"), MAP_SHAPES.index("square")]
    assert t[0, 0].tolist() == red_square and t[2, 2].tolist() == red_square  # 2 x 2 = 4 px >= 3
    assert t[0, 3].tolist() == [0, 0] and t[7, 7].tolist() == [0, 0]
    assert token_objects(img, 4, min_pixels=5).reshape(8, 8, 2)[2, 2].tolist() == [0, 0]


@pytest.mark.parametrize("regions", [0, 4])  # grounding per patch token, or per object token
def test_grounded_understanding_stage_trains_the_grounding_head(tmp_path, regions):
    model = TINY.model_copy(update={"und_grounding": True, "und_regions": regions})
    cfg = tiny_cfg(2).model_copy(update={"model": model, "ground_coef": 1.0, "gen_batch": 0})
    imgs, texts, labels, targets = und_batch(cfg, 0)
    assert targets.shape == (4, regions or 64, 2) and (targets[..., 0] > 0).any()
    from srum.models.mot import MotUMM
    from srum.models.mot_pretrain import understanding_loss

    torch.manual_seed(cfg.seed)
    init = MotUMM(model)  # what pretrain starts from
    trained = pretrain(cfg, tmp_path / "g", log=lambda *_: None)
    assert not torch.equal(init.net.ground_head.weight, trained.net.ground_head.weight)
    *_, ground = understanding_loss(trained, imgs, texts, labels, targets)
    assert torch.isfinite(ground) and ground > 0
    # judging never reads the head: the yes-probability is the same with or without it
    plain = MotUMM(TINY.model_copy(update={"und_regions": regions}), net=None)
    plain.net.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("ground_head.")})
    q = [trained.question(t) for t in texts]
    assert np.array_equal(trained.judge_yes_prob(imgs, q), plain.judge_yes_prob(imgs, q))


def test_object_token_targets_are_the_rules_reading_of_each_component():
    from srum.models.mot_pretrain import IGNORE, region_objects
    from srum.world.spec import COLORS

    img = np.zeros((32, 32, 3), np.uint8)
    img[2:12, 2:12] = COLORS["red"]  # 10 x 10, full: a square
    img[20:23, 2:12] = COLORS["blue"]  # 10 x 3: aspect 3.3, unknown
    img[28:31, 28:31] = COLORS["red"]  # 9 px: a fragment, under the world's 12
    t = region_objects(img, 4)
    want = [("red", "square"), ("blue", "unknown"), ("red", "fragment")]
    assert t[:3].tolist() == [[MAP_COLORS.index(c), MAP_SHAPES.index(s)] for c, s in want]
    assert (t[3] == IGNORE).all()


def test_grounding_loss_without_its_head_is_a_config_error():
    with pytest.raises(ValueError, match="ground_coef 1.0 needs model.und_grounding"):
        PretrainConfig(ground_coef=1.0)
    with pytest.raises(ValueError, match="new_lr_scale 10.0 needs init_from"):
        PretrainConfig(new_lr_scale=10)
    with pytest.raises(ValueError, match="und_edits"):
        PretrainConfig(und_edits=["add", "shuffle"])


def test_understanding_examples_name_their_kind():
    import collections
    import random

    from srum.world import parse, passes, training_spec
    from srum.world.examples import und_example

    kinds = {und_example(random.Random(i), training_spec(3, i), resized=0.3)[3] for i in range(200)}
    assert kinds == {"resized", "render", "perturbed prompt", "perturbed scene", "corrupted", "crop"}
    kinds = collections.Counter(und_example(random.Random(i), training_spec(3, i), 0.3, edited=0.5)[3] for i in range(200))
    assert 70 < kinds["edited scene"] < 130 and len(kinds) == 7
    blobs = [und_example(random.Random(i), training_spec(3, i), 0.3, blobs=1.0) for i in range(40)]
    assert {e[3] for e in blobs} == {"blobs"}
    assert all(label == passes(img, parse(text)) for img, text, label, _ in blobs)  # labelled by the world's rules
    assert 0 < sum(e[2] for e in blobs) < 40  # and some lumps still pass


def test_new_example_options_off_replay_earlier_stages_exactly():
    """und_edited, und_blobs and und_resize_each at 0 draw nothing from the example's generator, so configs from before them
    make the same batches."""
    import random

    from srum.world import training_spec
    from srum.world.examples import und_example

    for i in range(20):
        a, b = und_example(random.Random(i), training_spec(3, i), 0.3), und_example(random.Random(i), training_spec(3, i), 0.3, 0.0, blobs=0.0)
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    # und_resize_each redraws objects on their own chances: other images, still labelled by the rules
    each = [und_example(random.Random(i), training_spec(3, i), 1.0, resize_each=1.0) for i in range(20)]
    some = [und_example(random.Random(i), training_spec(3, i), 1.0) for i in range(20)]
    assert {e[3] for e in each} == {"resized"}
    assert sum(not np.array_equal(a[0], b[0]) for a, b in zip(each, some)) >= 15


def test_new_modules_learn_at_their_own_rate_and_resume_exactly(tmp_path):
    """new_lr_scale: the modules init_from lacks (here the object tokens' encoder) form a second optimiser group;
    a run resumed from its checkpoint matches one that ran straight through (both groups' Adam state restored)."""
    from srum.models.mot import MotUMM
    from srum.models.mot_pretrain import _param_groups

    MotUMM(TINY).save(tmp_path / "src")
    cfg = tiny_cfg(4).model_copy(update={"model": TINY.model_copy(update={"und_regions": 2}), "init_from": str(tmp_path / "src"),
                                         "new_lr_scale": 10.0})
    model = MotUMM(cfg.model)
    groups = _param_groups(cfg, model, frozen=set())
    new = {id(p) for p in groups[1]["params"]}
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert new == {id(p) for p in model.net.region_in.parameters()}
    straight = pretrain(cfg, tmp_path / "a", log=lambda *_: None)
    pretrain(cfg.model_copy(update={"stop_at": 2}), tmp_path / "b", log=lambda *_: None)
    resumed = pretrain(cfg, tmp_path / "b", log=lambda *_: None)
    assert torch.equal(straight.flat_weights(), resumed.flat_weights())
    same_rate = pretrain(cfg.model_copy(update={"new_lr_scale": 1.0}), tmp_path / "c", log=lambda *_: None)
    assert not torch.equal(straight.flat_weights(), same_rate.flat_weights())
