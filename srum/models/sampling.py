"""How a backend draws images: one options record for every backend, each reading the fields it has.

A field left None takes the backend's own default (`default_sampling`), so one configuration can name
only what it changes: the flow built-in integrates `steps` Euler steps with guidance 3, the Janus
built-in samples every image token at temperature 1 without guidance.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class SampleOptions:
    cfg_scale: float | None = None  # classifier-free guidance; 1.0 switches it off
    temperature: float | None = None  # autoregressive: softmax temperature of each image token
    top_k: int | None = None  # autoregressive: sample among the k likeliest tokens; 0 = all
    steps: int | None = None  # flow: Euler steps from noise (t = 1) to data (t = 0)
    eta: float | None = None  # flow: 0 = deterministic ODE; > 0 re-injects noise each step

    def over(self, defaults: SampleOptions) -> SampleOptions:
        """These options, with every field left None taken from `defaults`."""
        return replace(defaults, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})

    def check(self) -> SampleOptions:
        if self.cfg_scale is not None and self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0 (got {self.cfg_scale})")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k})")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps})")
        return self


def generate(model, prompts: list[str], n: int = 1, seed: int = 0, opts: SampleOptions | None = None,
             categories: list[str] | None = None, objects: list[tuple[str, ...]] | None = None) -> list:
    """n rollouts per prompt (prompt 0's n first), from one `model.sample` call: deterministic for a seed.
    A prompt's category is the one given, else CompWorld's for a prompt of its grammar, else "free"; `objects`:
    the phrases its local judge checks (default: from the prompt)."""
    from ..records import Rollout

    flat = [p for p in prompts for _ in range(n)]
    cats = [c for c in (categories or [category_of(p) for p in prompts]) for _ in range(n)]
    objs = [o for o in (objects or [()] * len(prompts)) for _ in range(n)]
    images, latents = model.sample(flat, seed, opts)
    return [Rollout(f"{seed}-{i}", p, c, images[i], latents[i], model.policy_version, tuple(o))
            for i, (p, c, o) in enumerate(zip(flat, cats, objs))]


def category_of(prompt: str) -> str:
    from ..world import PromptError, parse

    try:
        return parse(prompt).category
    except PromptError:
        return "free"
