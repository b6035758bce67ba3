"""Region proposals from a zero-shot detector in a local directory (a tiny random OWLv2 built here), asked for the
prompt's object phrases; the judge scores and filters its boxes as it does the components'."""

import numpy as np

from srum.records import Rollout
from srum.rewards.judge import JudgeOptions, SelfJudge
from srum.rewards.proposals import DetectorProposer


def test_detector_boxes_lie_in_the_image_and_follow_the_phrases(tmp_path):
    from tests.tiny_vlm import build_tiny_owlv2

    d = build_tiny_owlv2(tmp_path / "owl")
    p = DetectorProposer(str(d), threshold=0.0, max_regions=3)
    for shape in ((32, 32, 3), (48, 64, 3)):
        boxes = p(np.zeros(shape, np.uint8), ("a red apple", "a green leaf"))
        assert 1 <= len(boxes) <= 3
        assert all(0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0] for x0, y0, x1, y1 in boxes)
    assert p(np.zeros((32, 32, 3), np.uint8)) != [] # no phrases: asked for "an object"


def test_the_judge_filters_detector_boxes(tmp_path, tiny_janus32_dir):
    from srum.models import load_model
    from tests.tiny_vlm import build_tiny_owlv2

    model = load_model(tiny_janus32_dir)
    det = DetectorProposer(str(build_tiny_owlv2(tmp_path / "owl")), threshold=0.0, max_regions=4)
    r = Rollout("x", "a red apple and a green leaf", "free", np.zeros((32, 32, 3), np.uint8), np.zeros(0),
                objects=("a red apple", "a green leaf"))
    kept = SelfJudge(model, det, JudgeOptions(unmatched="negative", match=0.0)).judge([r])[0]
    dropped = SelfJudge(model, det, JudgeOptions(unmatched="drop", match=1.0)).judge([r])[0]
    assert len(kept.regions) == 4 and {g.label for g in kept.regions} <= {"a red apple", "a green leaf"}
    assert dropped.regions == []  # nothing reaches P(yes) >= 1: the model's filter removes every box
