"""CompWorld's oracle as the judge: a diagnostic, not SRUM.

SRUM's judge is the model's own understanding. This one is the program that scores CompWorld-Bench:
g = +1 when the image passes its prompt, -1 when it fails; with `use_local`, every object the program
detects is a region, +1 when its (colour, shape) is one the prompt names and -1 when it is not (a wrong
colour or shape, an unknown blob; a relation or a count has no region to blame). A run with it measures
how far the same update gets in the same budget with a judge that never errs, so a table can tell a
judge that limits the gain from an update that does (bench/srum_compworld.py, row `oracle`).
"""

from __future__ import annotations

from ..records import Judgement, Region, Rollout
from ..world.canvas import to_canvas
from ..world.spec import CANVAS
from ..world import PromptError, parse
from ..world.oracle import check
from .judge import JudgeOptions


class OracleJudge:
    def __init__(self, model, opts: JudgeOptions | None = None):
        self.model = model  # the frozen initial model: evaluations still report its own judge's view
        self.opts = opts or JudgeOptions()

    def judge(self, rollouts: list[Rollout]) -> list[Judgement]:
        return [self._judge(r) for r in rollouts]

    def _judge(self, r: Rollout) -> Judgement:
        try:
            spec = parse(r.prompt)
        except PromptError as e:
            raise PromptError(f"reward.judge.engine oracle checks CompWorld prompts only: {r.prompt!r}: {e}") from None
        passed, found = check(to_canvas(r.image[None])[0], spec)  # scored as the bench scores
        g = 1.0 if passed else -1.0
        regions = oracle_regions(found, spec, r.image.shape[0] / CANVAS) if self.opts.use_local else []
        return Judgement(r.id, g, regions, self.opts.map(g, regions, r.image.shape[:2]))


def oracle_regions(found, spec, scale: float) -> list[Region]:
    """Each detected object as a region of the image (boxes scaled from the 32 x 32 canvas): +1 if the prompt
    names its (colour, shape), else -1."""
    named = {tuple(o) for o in spec.objects}
    out = []
    for d in found:
        x0, y0, x1, y1 = d.box  # inclusive canvas pixels -> a half-open box of the image
        box = (int(x0 * scale), int(y0 * scale), int((x1 + 1) * scale), int((y1 + 1) * scale))
        out.append(Region(box, f"{d.color} {d.shape}", 1.0 if (d.color, d.shape) in named else -1.0))
    return out
