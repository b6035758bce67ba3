import numpy as np
import pytest

from srum.records import Rollout
from srum.rewards.judge import JudgeOptions
from srum.rewards.oracle_judge import OracleJudge
from srum.world import PromptError, draw, layout, parse


def rollout(prompt, image):
    return Rollout("r", prompt, "single", image, np.zeros(1))


GLOBAL_ONLY = JudgeOptions(use_local=False)


def test_the_oracle_judges_pass_and_fail_without_regions():
    import random

    spec = parse("a red circle")
    img = draw(layout(spec, random.Random(0)))
    good, bad = OracleJudge(None, GLOBAL_ONLY).judge([rollout("a red circle", img), rollout("a blue square", img)])
    assert (good.global_score, bad.global_score) == (1.0, -1.0) and not good.regions
    assert np.allclose(good.reward_map, 0.5) and np.allclose(bad.reward_map, 0.0)  # the paper's map, global only
    big = OracleJudge(None, GLOBAL_ONLY).judge([rollout("a red circle", np.kron(img, np.ones((2, 2, 1), np.uint8)))])[0]
    assert big.global_score == 1.0  # a 64 x 64 image is scored as the bench scores it, at 32 x 32


def test_oracle_regions_score_each_object_by_whether_the_prompt_names_it():
    import random

    img = draw(layout(parse("a red circle and a blue square"), random.Random(0)))
    (j,) = OracleJudge(None).judge([rollout("a red circle and a green square", img)])
    assert j.global_score == -1.0
    scores = {r.label: r.score for r in j.regions}
    assert scores == {"red circle": 1.0, "blue square": -1.0}
    big = np.kron(img, np.ones((2, 2, 1), np.uint8))  # boxes follow the image's resolution
    (j2,) = OracleJudge(None).judge([rollout("a red circle and a blue square", big)])
    assert j2.global_score == 1.0 and all(r.score == 1.0 for r in j2.regions)
    box = next(r.box for r in j.regions if r.label == "red circle")
    assert next(r.box for r in j2.regions if r.label == "red circle") == tuple(2 * v for v in box)
    assert j2.reward_map.max() == 1.0 and j2.reward_map.min() == 0.5  # the paper's map: named objects raised


def test_the_oracle_refuses_a_free_text_prompt_by_name():
    with pytest.raises(PromptError, match="checks CompWorld prompts only: 'a cat on a mat'"):
        OracleJudge(model=None).judge([rollout("a cat on a mat", np.zeros((32, 32, 3), np.uint8))])


def test_the_judge_stage_takes_the_oracle_from_the_config():
    import random

    from srum.config import TrainConfig, load_config
    from srum.stages import JudgeStage

    cfg = load_config(TrainConfig, None, ["reward.judge.engine=oracle", "reward.use_local=false"])
    stage = JudgeStage(cfg)
    img = draw(layout(parse("two green triangles"), random.Random(1)))
    (j,) = stage.score([rollout("two green triangles", img)])
    assert j.global_score == 1.0 and stage.model.kind == "janus"  # evaluations still ask the model's own judge
