"""CompWorld's oracle as the judge: a diagnostic, not SRUM.

SRUM's judge is the model's own understanding. This one is the program that scores CompWorld-Bench:
g = +1 when the image passes its prompt, -1 when it fails, no regions. A run with it measures how far
the same update gets in the same budget with a judge that never errs, so a table can tell a judge
that limits the gain from an update that does (bench/srum_compworld.py, row `oracle_judge`).
"""

from __future__ import annotations

from ..evaluate import to_canvas
from ..records import Judgement, Rollout
from ..world import PromptError, parse, passes
from .judge import JudgeOptions
from .reward_map import reward_map


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
        g = 1.0 if passes(to_canvas(r.image[None])[0], spec) else -1.0  # scored as the bench scores
        o = self.opts
        m = reward_map(g, [], r.image.shape[:2], o.signed, o.use_global, False, o.binarize, o.uniform)
        return Judgement(r.id, g, [], m)
