"""The text-judge path, for large VLM judges that answer in words rather than yes/no logits.

The judge is asked for `Score: x` per region and globally. Real model output is untidy (reasoning
blocks, extra prose, missing regions, out-of-range numbers), so the parser is tolerant, values are
clamped to [-1, 1], an incomplete answer is retried a bounded number of times, and whatever is still
missing is counted (`fallbacks`); `TextModeJudge` (judge.py) then fails the sample rather than learn from a 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .proposals import Box

TEMPLATE = """You judge an image generated for the prompt: "{prompt}".
{regions}For each region, rate how well it shows the object of the prompt it should show, from -1 (wrong or
unrequested) to 1 (exactly right). Then rate the whole image, its objects, counts and layout.
Answer only in this form:
{answer_form}Global: Score: <number>"""

_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))"
_REGION = re.compile(rf"region\s*#?\s*(\d+)\b[^\n\d]*?score\s*[:=]?\s*\**\s*{_NUM}", re.IGNORECASE)
_GLOBAL = re.compile(rf"(?:global|overall|whole image)[^\n\d]*?score\s*[:=]?\s*\**\s*{_NUM}", re.IGNORECASE)
_ANY = re.compile(rf"score\s*[:=]\s*\**\s*{_NUM}", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def judge_prompt(prompt: str, boxes: list[Box]) -> str:
    regions = "".join(f"Region {k + 1}: box (x0={b[0]}, y0={b[1]}, x1={b[2]}, y1={b[3]})\n" for k, b in enumerate(boxes))
    form = "".join(f"Region {k + 1}: Score: <number>\n" for k in range(len(boxes)))
    return TEMPLATE.format(prompt=prompt, regions=regions, answer_form=form)


def _clamp(x: str) -> float:
    return float(np.clip(float(x), -1.0, 1.0))


def parse_scores(text: str, n_regions: int) -> tuple[float | None, list[float | None]]:
    """(global score or None, per-region score or None), all clamped to [-1, 1]."""
    text = _THINK.sub("", text)
    if "</think>" in text.lower():  # an unopened reasoning block: keep what follows its end
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    regions: list[float | None] = [None] * n_regions
    for k, v in _REGION.findall(text):
        if 1 <= int(k) <= n_regions and regions[int(k) - 1] is None:
            regions[int(k) - 1] = _clamp(v)
    g = _GLOBAL.findall(text)
    glob = _clamp(g[-1]) if g else None
    if glob is None and n_regions == 0:  # a bare "Score: x" answers the only question asked
        bare = _ANY.findall(text)
        glob = _clamp(bare[-1]) if bare else None
    return glob, regions


@dataclass
class TextJudgeResult:
    global_score: float
    region_scores: list[float]
    fallbacks: int  # values that fell back to neutral 0 after every retry
    attempts: int


class TextJudge:
    """ask(question_text, image) -> the VLM's answer text (vLLM, transformers, or an HTTP endpoint)."""

    def __init__(self, ask: Callable[[str, np.ndarray], str], retries: int = 2):
        self.ask, self.retries = ask, retries
        self.fallbacks = 0  # running total, exported as a metric

    def judge(self, prompt: str, image: np.ndarray, boxes: list[Box]) -> TextJudgeResult:
        question = judge_prompt(prompt, boxes)
        glob, regions = None, [None] * len(boxes)
        attempts = 0
        while attempts <= self.retries and (glob is None or None in regions):
            g, rs = parse_scores(self.ask(question, image), len(boxes))
            glob = glob if glob is not None else g
            regions = [a if a is not None else b for a, b in zip(regions, rs)]
            attempts += 1
        missing = (glob is None) + sum(r is None for r in regions)
        self.fallbacks += missing
        return TextJudgeResult(0.0 if glob is None else glob, [0.0 if r is None else r for r in regions], missing, attempts)
