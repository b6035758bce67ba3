"""BAGEL's sampler pieces: the shifted flow schedule, classifier-free guidance's renormalisation, and the options
its sampler reads beyond the common ones."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..sampling import SampleOptions


def flow_schedule(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 times from 1 to 0, shifted toward the noise end: t' = s t / (1 + (s - 1) t)."""
    t = torch.linspace(1, 0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def renormalised(v_cond: torch.Tensor, v_guided: torch.Tensor, kind: str, floor: float) -> torch.Tensor:
    """BAGEL's CFG renorm: scale the guided velocity down to the conditional one's norm (never up, never below
    `floor` times). global: one norm per image (the official code takes one over its whole packed batch,
    which is the same at batch 1); channel / text_channel: one per token."""
    if kind == "global":
        dims = tuple(range(1, v_cond.dim()))
    elif kind in ("channel", "text_channel"):
        dims = (-1,)
    else:
        raise ValueError(f"cfg_renorm_type {kind!r}: expected global, channel or text_channel")
    ratio = v_cond.norm(dim=dims, keepdim=True) / (v_guided.norm(dim=dims, keepdim=True) + 1e-8)
    return v_guided * ratio.clamp(min=floor, max=1.0)


@dataclass(frozen=True)
class BagelSampleOptions(SampleOptions):
    """SampleOptions plus what BAGEL's sampler also reads; None takes the model's setting."""

    height: int | None = None
    width: int | None = None
    timestep_shift: float | None = None
    cfg_interval: tuple[float, float] | None = None
    cfg_renorm_type: str | None = None  # global | channel | text_channel
    cfg_renorm_min: float | None = None


def common_options(opts) -> SampleOptions:
    """The SampleOptions fields of any options record (a BagelSampleOptions, or one with more fields)."""
    if opts is None:
        return SampleOptions()
    return SampleOptions(**{f.name: getattr(opts, f.name, None) for f in fields(SampleOptions)})
