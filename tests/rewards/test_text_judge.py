import numpy as np
import pytest

from srum.rewards.text_judge import TextJudge, judge_prompt, parse_scores

CASES = [
    # (model output, n regions, expected global, expected regions)
    ("Region 1: Score: 0.8\nRegion 2: Score: -0.5\nGlobal: Score: 0.3", 2, 0.3, [0.8, -0.5]),
    ("<think>The red square looks fine. Score: 0.9 maybe?</think>\nRegion 1: Score: 0.7\nGlobal: Score: 0.6", 1, 0.6, [0.7]),
    ("Okay, let me think... the circle is squashed.\n</think>\nRegion 1: Score: -0.4\nGlobal: Score: -0.2", 1, -0.2, [-0.4]),
    ("Sure! Here is my assessment.\n\nRegion 1: Score: 1\nRegion 2: Score: 0\nGlobal: Score: 1.0\nHope this helps.", 2, 1.0, [1.0, 0.0]),
    ("Region 1: Score: 0.5\nGlobal: Score: 0.4", 2, 0.4, [0.5, None]),  # a region is missing
    ("Region 1: Score: 3\nRegion 2: Score: -7.5\nGlobal: Score: 1.2", 2, 1.0, [1.0, -1.0]),  # clamped
    ("region 1 - score = .75\nREGION 2 score: -.25\noverall score: 0.1", 2, 0.1, [0.75, -0.25]),  # case, '=', bare decimals
    ("**Region 1**: Score: **0.6**\n**Global**: Score: **0.2**", 1, 0.2, [0.6]),  # markdown bold
    ("Global: Score: 0.5\nRegion 2: Score: 0.9\nRegion 1: Score: 0.1", 2, 0.5, [0.1, 0.9]),  # any order
    ("Region 3: Score: 0.9\nGlobal: Score: 0.0", 2, 0.0, [None, None]),  # a region that was not asked for
    ("Score: 0.35", 0, 0.35, []),  # no regions: a bare score is the global one
    ("I cannot judge this image.", 1, None, [None]),  # refusal
    ("", 2, None, [None, None]),  # empty
    ("Region 1: Score: N/A\nGlobal: Score: high", 1, None, [None]),  # words instead of numbers
    ("Region 1: Score: 0.5\nRegion 1: Score: -0.5\nGlobal: Score: 0.2", 1, 0.2, [0.5]),  # repeated: first wins
    ("Global: Score: 0.2\nOn reflection, Global: Score: 0.4", 0, 0.4, []),  # revised global: last wins
    ("Region #1: score:+0.3\nWhole image: Score: -0.1", 1, -0.1, [0.3]),  # '#', explicit plus sign
    ("<think>Region 1: Score: -1</think>Region 1: Score: 0.9\nGlobal: Score: 0.9", 1, 0.9, [0.9]),  # thinking ignored
]


@pytest.mark.parametrize("text,n,glob,regions", CASES)
def test_parser(text, n, glob, regions):
    g, rs = parse_scores(text, n)
    assert (g is None and glob is None) or g == pytest.approx(glob)
    assert [None if r is None else pytest.approx(r) for r in rs] == regions


def test_at_least_15_cases():
    assert len(CASES) >= 15


def test_retries_then_neutral_fallback_counted():
    answers = iter(["Region 1: Score: 0.5", "nonsense", "still nothing"])
    judge = TextJudge(lambda q, img: next(answers), retries=2)
    r = judge.judge("a red square", np.zeros((32, 32, 3), np.uint8), [(0, 0, 10, 10)])
    assert r.region_scores == [0.5] and r.global_score == 0.0 and r.fallbacks == 1 and r.attempts == 3
    assert judge.fallbacks == 1


def test_a_retry_fills_what_was_missing():
    answers = iter(["Region 1: Score: 0.5", "Global: Score: -0.3"])
    judge = TextJudge(lambda q, img: next(answers), retries=3)
    r = judge.judge("a red square", np.zeros((32, 32, 3), np.uint8), [(0, 0, 10, 10)])
    assert (r.global_score, r.region_scores, r.fallbacks, r.attempts) == (-0.3, [0.5], 0, 2)


def test_prompt_lists_regions_and_answer_form():
    q = judge_prompt("two red squares", [(0, 0, 10, 10), (12, 0, 22, 10)])
    assert "Region 2: box (x0=12, y0=0, x1=22, y1=10)" in q and "Region 2: Score: <number>" in q and "two red squares" in q
