import numpy as np
import pytest

from srum.records import Rollout
from srum.rewards.oracle_judge import OracleJudge
from srum.world import PromptError, draw, layout, parse


def rollout(prompt, image):
    return Rollout("r", prompt, "single", image, np.zeros(1))


def test_the_oracle_judges_pass_and_fail_without_regions():
    import random

    spec = parse("a red circle")
    img = draw(layout(spec, random.Random(0)))
    good, bad = OracleJudge(model=None).judge([rollout("a red circle", img), rollout("a blue square", img)])
    assert (good.global_score, bad.global_score) == (1.0, -1.0) and not good.regions
    assert np.allclose(good.reward_map, 0.5) and np.allclose(bad.reward_map, 0.0)  # the paper's map, global only
    big = OracleJudge(model=None).judge([rollout("a red circle", np.kron(img, np.ones((2, 2, 1), np.uint8)))])[0]
    assert big.global_score == 1.0  # a 64 x 64 image is scored as the bench scores it, at 32 x 32


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
