"""Self-judging: the model's own understanding head scores its generations, globally and per region.

global  g   = 2 P(yes | image, prompt) - 1
local   s_r = 2 P(yes | region, best-matching object phrase of the prompt) - 1
relation    = whether the regions the model recognises as the prompt's objects stand as it says (`relations.py`)
A region in which the model recognises none of the prompt's objects (best P(yes) below `match`) is
either scored as it is (negative: something unrequested is there) or dropped, the paper's filter.
All questions of a batch of images, global and local, go through one batched forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import Judgement, Region, Rollout
from ..rollout.sources import PromptItem, item
from ..world.corrupt import crop_region
from .proposals import Proposer
from .relations import relation_score
from .reward_map import reward_map


@dataclass
class JudgeOptions:
    uniform: bool = False  # every weight 1: the no-reward control
    use_global: bool = True
    use_local: bool = True
    binarize: bool = False
    match: float = 0.5  # a region "shows" a named object when P(yes) >= match
    unmatched: str = "negative"  # negative | drop
    strict_global: bool = True  # the map's global score is the lowest of g, the region and relation scores (`verdict_score`)
    relations: bool = True  # read the prompt's relations off the recognised regions (`relations.py`)
    relation_margin: float = 1 / 16  # of the image's width: how far apart related centres must be (CompWorld: 2 of 32 px)

    @classmethod
    def of(cls, r) -> "JudgeOptions":
        """The options a RewardConfig names (its map form, which scores count, how regions are matched)."""
        return cls(r.map == "uniform", r.use_global, r.use_local, r.binarize, r.match, r.unmatched, r.strict_global,
                   r.judge_mode == "grounded", r.relation_margin)

    def global_of(self, g: float, regions: list[Region], relation: float | None = None) -> float:
        """The global score the map is scaled by: the judge's, or with strict_global its fine-grained verdict."""
        return verdict_score(g, regions, relation) if self.strict_global else g

    def map(self, g: float, regions: list[Region], size: tuple[int, int], relation: float | None = None) -> np.ndarray:
        """The dense reward map of a global score and judged regions, in this form."""
        return reward_map(self.global_of(g, regions, relation), [(reg.box, reg.score) for reg in regions], size,
                          self.use_global, self.use_local, self.binarize, self.uniform)


def verdict_score(g: float, regions: list[Region], relation: float | None = None) -> float:
    """The fine-grained verdict as a score: an image is as good as its worst part, the lowest of the global score,
    every judged region's and the relation reading's. It accepts (> 0) when the model says yes to the whole prompt,
    recognises one of the named objects in every proposed region, and the regions it recognises as the prompt's
    objects stand as the prompt says. On the built-in's 2,400 own generations: the global question alone 0.800
    balanced accuracy, with the regions 0.863 (they catch wrong shapes and colours), with the relations too 0.927
    (foundation.md at tag archive/wordings-2026-12)."""
    return min([g, *(r.score for r in regions), *([] if relation is None else [relation])])


def object_phrases(prompt: str) -> list[str]:
    """The distinct objects a prompt names, as single-object phrases ('a red square'): a CompWorld scene's
    objects, or what the phrase extractor finds in a free-text prompt."""
    return list(item(prompt).objects)


class SelfJudge:
    def __init__(self, model, proposer: Proposer, opts: JudgeOptions | None = None):
        self.model, self.proposer, self.opts = model, proposer, opts or JudgeOptions()

    def judge(self, rollouts: list[Rollout]) -> list[Judgement]:
        images, questions, owners = [], [], []  # owner: (rollout index, region index or -1, phrase)
        boxes, items = [], [item(r.prompt) for r in rollouts]  # each prompt read once: its objects and relations
        for i, (r, it) in enumerate(zip(rollouts, items)):
            images.append(r.image)
            questions.append(self.model.question(r.prompt))
            owners.append((i, -1, None))
            phrases = r.objects or it.objects
            bs = self.proposer(r.image, tuple(phrases)) if self.opts.use_local else []
            boxes.append(bs)
            for k, box in enumerate(bs):
                crop = crop_region(r.image, box)
                for phrase in phrases:
                    images.append(crop)
                    questions.append(self.model.question(phrase))
                    owners.append((i, k, phrase))
        p = self.model.judge_yes_prob(np.stack(images), questions)
        answers = [[] for _ in rollouts]  # grouped once: each rollout's own (owner, P(yes)) pairs
        for o, q in zip(owners, p):
            answers[o[0]].append((o, q))
        return [self._assemble(r, it, boxes[i], answers[i]) for i, (r, it) in enumerate(zip(rollouts, items))]

    def _assemble(self, r: Rollout, it: PromptItem, boxes, answers) -> Judgement:
        g = 2 * float(next(q for (_, k, _), q in answers if k == -1)) - 1
        regions = []
        for k, box in enumerate(boxes):
            phrase, best = max(((ph, q) for (_, kk, ph), q in answers if kk == k), key=lambda a: a[1])
            if best < self.opts.match and self.opts.unmatched == "drop":
                continue
            regions.append(Region(tuple(int(v) for v in box), phrase, 2 * float(best) - 1))
        relation = None  # where the prompt's objects stand: CompWorld's relations, or a free-text "X left of Y"
        if self.opts.relations and self.opts.use_local:
            p_yes = {(k, ph): float(q) for (_, k, ph), q in answers if k >= 0}
            relation = relation_score(list(it.named), list(it.relations), boxes, p_yes, self.opts.match,
                                      self.opts.relation_margin * r.image.shape[1])
        return Judgement(r.id, g, regions, self.opts.map(g, regions, r.image.shape[:2], relation), relation)


class TextModeJudge:
    """A judge that answers in words (a large VLM served by vLLM): "Score: x" per region and globally, parsed by
    `text_judge` with bounded retries. A sample whose answer still misses a score, or whose asking raised, is a
    failed judgement (`Judgement.failed`), never a neutral 0: the learner drops it (srum/stages.py)."""

    def __init__(self, model, proposer: Proposer, opts: JudgeOptions | None = None, retries: int = 2):
        from .text_judge import TextJudge

        self.model, self.proposer, self.opts = model, proposer, opts or JudgeOptions()
        self.text = TextJudge(model.ask, retries)

    @property
    def fallbacks(self) -> int:
        return self.text.fallbacks

    def judge(self, rollouts: list[Rollout]) -> list[Judgement]:
        out = []
        for r in rollouts:
            boxes = self.proposer(r.image, tuple(r.objects or object_phrases(r.prompt))) if self.opts.use_local else []
            try:
                res = self.text.judge(r.prompt, r.image, boxes)
            except Exception as e:  # noqa: BLE001 - a judge server's error (vLLM, HTTP) fails this sample, counted
                out.append(Judgement(r.id, 0.0, failed=f"judge error: {type(e).__name__}: {str(e)[:200]}"))
                continue
            if res.fallbacks:
                out.append(Judgement(r.id, 0.0, failed=f"unparsed: {res.fallbacks} scores missing after {res.attempts} attempts"))
                continue
            regions = [Region(tuple(int(v) for v in b), "", s) for b, s in zip(boxes, res.region_scores)]
            out.append(Judgement(r.id, res.global_score, regions, self.opts.map(res.global_score, regions, r.image.shape[:2])))
        return out
