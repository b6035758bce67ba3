"""Rollouts: a backend's samples as the records the rest of the loop reads (srum/records.py)."""

from __future__ import annotations

from ..records import Rollout
from ..world import PromptError, parse


def draw_rollouts(model, prompts: list[str], n: int = 1, seed: int = 0, opts=None, categories: list[str] | None = None,
                  objects: list[tuple[str, ...]] | None = None, logprobs: bool = False) -> list[Rollout]:
    """n rollouts per prompt (prompt 0's n first), from one `model.sample` call: deterministic for a seed.
    A prompt's category is the one given, else CompWorld's for a prompt of its grammar, else "free"; `objects`:
    the phrases its local judge checks (default: from the prompt). `logprobs`: a token backend records each sampled
    token's log-probability (issue 39's check; a log-softmax over the codebook per token, so only when asked)."""
    flat = [p for p in prompts for _ in range(n)]
    cats = [c for c in (categories or [category_of(p) for p in prompts]) for _ in range(n)]
    objs = [o for o in (objects or [()] * len(prompts)) for _ in range(n)]
    record = logprobs and getattr(model, "objective", None) == "tokens"  # a flow backend has no tokens to score
    images, latents, *lp = model.sample(flat, seed, opts, logprobs=True) if record else model.sample(flat, seed, opts)
    return [Rollout(f"{seed}-{i}", p, c, images[i], latents[i], model.policy_version, tuple(o), lp[0][i] if lp else None)
            for i, (p, c, o) in enumerate(zip(flat, cats, objs))]


def category_of(prompt: str) -> str:
    try:
        return parse(prompt).category
    except PromptError:
        return "free"
