import numpy as np
import pytest

from srum.records import Rollout
from srum.rewards.judge import JudgeOptions, SelfJudge, object_phrases, verdict_score
from srum.rewards.proposals import ComponentProposer
from srum.world import parse, render


class ScriptedModel:
    """A stand-in understanding head: P(yes) by question, counting the questions it is asked."""

    def __init__(self, answers, by_image=None):
        self.answers, self.by_image, self.calls = answers, by_image, []

    @staticmethod
    def question(p):
        return p

    def judge_yes_prob(self, images, questions):
        self.calls.append(len(questions))
        if self.by_image:
            return np.array([self.by_image(img, q) for img, q in zip(images, questions)])
        return np.array([self.answers.get(q, 0.1) for q in questions])


def rollout(prompt, seed=0):
    import random

    return Rollout("r", prompt, parse(prompt).category, render(parse(prompt), random.Random(seed)), np.zeros((64, 48), np.float32))


def test_object_phrases():
    assert object_phrases("three red squares above a blue circle") == ["a blue circle", "a red square"]


def test_global_and_local_scores_in_one_batched_call():
    model = ScriptedModel({"a red square and a blue circle": 0.9, "a red square": 0.8, "a blue circle": 0.2})
    judge = SelfJudge(model, ComponentProposer(), JudgeOptions(strict_global=False))  # the paper's map: times (g + 1) / 2
    out = judge.judge([rollout("a red square and a blue circle"), rollout("a red square and a blue circle", 1)])
    assert model.calls == [2 + 2 * 2 * 2]  # 2 global + 2 images x 2 regions x 2 phrases, in one forward
    j = out[0]
    assert np.isclose(j.global_score, 0.8) and len(j.regions) == 2
    assert all(np.isclose(r.score, 0.6) and r.label == "a red square" for r in j.regions)  # best phrase wins
    assert j.reward_map.shape == (32, 32) and np.isclose(j.reward_map.max(), 0.8 * 0.9)


def test_unmatched_regions_scored_negative_or_dropped():
    green = np.array([30, 200, 30])
    model = ScriptedModel({}, by_image=lambda img, q: 0.1 if (img == green).all(-1).any() else 0.9)
    r = rollout("a red square")
    r.image[25:31, 25:31] = (30, 200, 30)  # a stray green blob
    neg = SelfJudge(model, ComponentProposer(), JudgeOptions(unmatched="negative")).judge([r])[0]
    drop = SelfJudge(model, ComponentProposer(), JudgeOptions(unmatched="drop")).judge([r])[0]
    assert sorted(round(x.score, 3) for x in neg.regions) == [-0.8, 0.8]
    assert [round(x.score, 3) for x in drop.regions] == [0.8]


def test_global_only_asks_no_region_questions():
    model = ScriptedModel({})
    SelfJudge(model, ComponentProposer(), JudgeOptions(use_local=False)).judge([rollout("a red square")])
    assert model.calls == [1]


def test_verdict_is_the_worst_part_and_strict_global_maps_it():
    """The fine-grained verdict rejects an image the global question accepts when one region shows no named
    object; with strict_global (the default) the map's global factor is that verdict, not the global score."""
    green = np.array([30, 200, 30])
    red = np.array([230, 30, 30])
    shows = lambda img, c: (img == c).all(-1).any()  # noqa: E731
    # the whole image (red and green) and the red square's region answer yes; the green blob's region no
    model = ScriptedModel({}, by_image=lambda img, q: 0.1 if shows(img, green) and not shows(img, red) else 0.9)
    r = rollout("a red square")
    r.image[25:31, 25:31] = (30, 200, 30)  # a stray green blob the whole-image question misses
    plain = SelfJudge(model, ComponentProposer(), JudgeOptions(strict_global=False)).judge([r])[0]  # the paper's form
    strict = SelfJudge(model, ComponentProposer()).judge([r])[0]  # the default
    assert np.isclose(plain.global_score, 0.8) and np.isclose(verdict_score(plain.global_score, plain.regions), -0.8)
    assert verdict_score(0.8, []) == 0.8  # no region: the global score alone
    # paper map: regions raised to 0.9 (the red square) or kept at 0.5, times (g + 1) / 2 = 0.9 plain, 0.1 strict
    assert np.isclose(plain.reward_map.max(), 0.9 * 0.9) and np.isclose(strict.reward_map.max(), 0.9 * 0.1)
    assert np.isclose(strict.global_score, plain.global_score)  # the judgement keeps what the model said


def test_relations_are_read_off_the_regions_the_model_recognises():
    """A model that recognises each object's colour in its crop, asked about a prompt with a relation: the relation
    reading is positive on the render and negative on the render turned upside down (the same objects, misplaced),
    and the fine-grained verdict (and a strict_global map) follows it; a prompt outside CompWorld's grammar and
    `relations=False` read nothing."""
    red, blue = np.array([230, 30, 30]), np.array([40, 90, 255])
    shows = lambda img, c: bool((np.abs(img.astype(int) - c).sum(-1) < 60).any())  # noqa: E731

    def answer(img, q):
        if "above" in q or "below" in q:
            return 0.9  # the whole-image question: relation-blind, yes either way
        return 0.9 if shows(img, red if "red" in q else blue) else 0.1

    prompt = "a red square above a blue circle"
    assert parse(prompt).relations  # the grammar names the relation
    r = rollout(prompt)
    flipped = Rollout("f", r.prompt, r.category, np.ascontiguousarray(r.image[::-1]), r.latent)
    model = ScriptedModel({}, by_image=answer)
    right, wrong = SelfJudge(model, ComponentProposer(), JudgeOptions(strict_global=False)).judge([r, flipped])
    assert np.isclose(right.relation_score, 0.8) and np.isclose(wrong.relation_score, -0.8)
    assert verdict_score(right.global_score, right.regions, right.relation_score) > 0
    assert verdict_score(wrong.global_score, wrong.regions, wrong.relation_score) < 0
    assert np.isclose(wrong.global_score, 0.8)  # what the model said of the whole image is kept
    strict = SelfJudge(model, ComponentProposer()).judge([flipped])[0]  # the default: the verdict scales the map
    assert strict.reward_map.max() < wrong.reward_map.max()
    off = SelfJudge(model, ComponentProposer(), JudgeOptions(relations=False)).judge([r])[0]
    assert off.relation_score is None
    # a free-text prompt of one object, a direction and one object is read the same way (T2I-CompBench's wording)
    free = [Rollout(i, "A red box on the top of a blue ball.", "free", im, r.latent) for i, im in (("t", r.image), ("u", flipped.image))]
    up, down = SelfJudge(model, ComponentProposer()).judge(free)
    assert np.isclose(up.relation_score, 0.8) and np.isclose(down.relation_score, -0.8)
    # ... and one whose objects the judge was told by name, or with no direction, is not
    named = Rollout("n", free[0].prompt, "free", r.image, r.latent, objects=("a red thing", "a blue thing"))
    near = Rollout("x", "a red box next to a blue ball", "free", r.image, r.latent)
    assert [j.relation_score for j in SelfJudge(model, ComponentProposer()).judge([named, near])] == [None, None]


def test_judge_modes_by_name():
    """`self` is the model's own answers only; `grounded` adds the relation reading by geometry."""
    from srum.config import RewardConfig

    assert JudgeOptions.of(RewardConfig()).relations  # the default: grounded
    assert not JudgeOptions.of(RewardConfig(judge_mode="self")).relations
    with pytest.raises(ValueError, match="judge_mode"):
        RewardConfig(judge_mode="rules")
