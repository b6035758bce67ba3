"""BAGEL's sampler pieces: the shifted flow schedule and classifier-free guidance's renormalisation. The options
its sampler reads are SampleOptions' flow fields (srum/models/sampling.py)."""

from __future__ import annotations

import torch

from ..sampling import RENORM_TYPES, SampleOptions


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
    elif kind in RENORM_TYPES:
        dims = (-1,)
    else:
        raise ValueError(f"cfg_renorm_type {kind!r}: expected one of {', '.join(RENORM_TYPES)}")
    ratio = v_cond.norm(dim=dims, keepdim=True) / (v_guided.norm(dim=dims, keepdim=True) + 1e-8)
    return v_guided * ratio.clamp(min=floor, max=1.0)


# BAGEL's sampler settings (height, width, timestep_shift, cfg_interval, cfg_renorm_type, cfg_renorm_min) are fields
# of the common SampleOptions, so a configuration's `sampling` section sets them; the old name stays an alias.
BagelSampleOptions = SampleOptions
