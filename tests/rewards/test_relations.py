import pytest

from srum.rewards.relations import centre, relation_score

RED, BLUE = "a red square", "a blue circle"
BOXES = [(4, 2, 10, 8), (4, 20, 10, 26)]  # region 0 above region 1 (centres at y 5 and 23)


def p(**by_region):
    """P(yes) per (region, phrase): by_region = {"r0": {RED: 0.9}, ...}."""
    return {(int(k[1:]), ph): q for k, d in by_region.items() for ph, q in d.items()}


def test_a_relation_that_holds_scores_the_recognition_of_its_objects():
    s = relation_score([RED, BLUE], [(0, "above", 1)], BOXES, p(r0={RED: 0.9, BLUE: 0.1}, r1={RED: 0.2, BLUE: 0.8}), 0.5, 2)
    assert s == pytest.approx(0.6)  # min(2*0.9-1, 2*0.8-1)


def test_objects_recognised_but_misplaced_score_negative():
    s = relation_score([RED, BLUE], [(0, "below", 1)], BOXES, p(r0={RED: 0.9}, r1={BLUE: 0.8}), 0.5, 2)
    assert s == pytest.approx(-0.6)


def test_no_relation_or_an_object_recognised_nowhere_reads_nothing():
    probs = p(r0={RED: 0.9}, r1={BLUE: 0.3})
    assert relation_score([RED, BLUE], [(0, "above", 1)], BOXES, probs, 0.5, 2) is None
    assert relation_score([RED, BLUE], [], BOXES, p(r0={RED: 0.9}, r1={BLUE: 0.8}), 0.5, 2) is None


def test_one_region_cannot_play_two_objects_and_the_margin_counts():
    # a single region recognised as both: no assignment of two distinct regions, so nothing is read
    assert relation_score([RED, BLUE], [(0, "above", 1)], BOXES[:1], p(r0={RED: 0.9, BLUE: 0.9}), 0.5, 2) is None
    # centres 18 px apart: a margin beyond that and the relation does not hold
    assert relation_score([RED, BLUE], [(0, "above", 1)], BOXES, p(r0={RED: 0.9}, r1={BLUE: 0.8}), 0.5, 19) == pytest.approx(-0.6)


def test_the_best_assignment_under_which_every_relation_holds_wins():
    # two red squares recognised; only the one above the circle makes the relation hold
    boxes = [(0, 0, 6, 6), (0, 26, 6, 32), (20, 13, 26, 19)]  # red top, red bottom, blue in the middle
    probs = p(r0={RED: 0.7}, r1={RED: 0.95}, r2={BLUE: 0.9})
    assert relation_score([RED, BLUE], [(0, "above", 1)], boxes, probs, 0.5, 2) == pytest.approx(0.4)
    assert centre(boxes[2]) == (23.0, 16.0)
