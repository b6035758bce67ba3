"""The dense reward map: a global score and region scores -> a float32 H x W map -> per-token weights.

Paper form (default): 0.5 everywhere; each region raised to (s_r + 1) / 2 where that is larger; the
whole map times (g + 1) / 2. A negatively judged region is never pushed below the background.
Uniform (the control): 1 everywhere, whatever the judge says.
Signed form (ours): each region *set* to (s_r + 1) / 2 (the lowest wins where regions overlap), times
(g + 1) / 2, then mapped to [-1, 1] by 2m - 1, so a badly judged region gets a negative weight and
the update pushes the sample away there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .proposals import Box


def reward_map(g: float, regions: list[tuple[Box, float]], size: tuple[int, int], signed: bool = False,
               use_global: bool = True, use_local: bool = True, binarize: bool = False, uniform: bool = False,
               binarize_at: float = 0.5) -> np.ndarray:
    """`binarize`: each score becomes +1 where P(yes) = (s + 1) / 2 exceeds `binarize_at`, else -1. A threshold above
    0.5 trades recall for precision: fewer of the policy's samples count as passing, and fewer of those wrongly."""
    h, w = size
    if uniform:  # the control: no reward at all
        return np.ones((h, w), np.float32)
    if binarize:
        cut = 2 * binarize_at - 1
        g = 1.0 if g > cut else -1.0
        regions = [(b, 1.0 if s > cut else -1.0) for b, s in regions]
    m = np.full((h, w), 0.5, np.float32)
    if use_local:
        low = np.full((h, w), np.inf, np.float32)
        for (x0, y0, x1, y1), s in regions:
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)  # boxes may reach outside
            if x1 <= x0 or y1 <= y0:
                continue
            v = (float(np.clip(s, -1, 1)) + 1) / 2
            if signed:
                low[y0:y1, x0:x1] = np.minimum(low[y0:y1, x0:x1], v)
            else:
                m[y0:y1, x0:x1] = np.maximum(m[y0:y1, x0:x1], v)
        if signed:
            m = np.where(np.isfinite(low), low, m).astype(np.float32)
    if use_global:
        m = m * (float(np.clip(g, -1, 1)) + 1) / 2
    return (2 * m - 1).astype(np.float32) if signed else m


def pool_to_tokens(maps: np.ndarray, grid: int) -> torch.Tensor:
    """(B, H, W) maps -> (B, grid * grid) token weights by area average (row-major, like patchify)."""
    t = torch.as_tensor(maps, dtype=torch.float32)[:, None]
    return F.adaptive_avg_pool2d(t, grid).flatten(1)


def centre(weights: torch.Tensor, how: str = "batch", group: int = 1, background: torch.Tensor | None = None) -> torch.Tensor:
    """Advantage centring of (B, N) token weights:
    - `batch`: minus the batch's mean;
    - `prompt` (GRPO-style): minus the mean of every weight of the prompt's `group` consecutive samples;
    - `prompt_token`: each token minus the mean of the same token position over the prompt's samples;
    - `prompt_global`: minus the prompt's mean `background` (B,) level, the weight of the global score alone
      (`JudgeOptions.background`);
    - `prompt_scale` (no centring): each prompt's weights divided by their mean, so every prompt weighs as much as
      any other whatever its share of good samples (all-zero prompts stay 0). With binarised scores this is
      filtered self-imitation in which a hard prompt's one judged success counts as much as an easy prompt's
      many: the categories the generator is worst at are the ones whose successes are rarest.
    Why the last two: under `prompt` a sample whose regions are raised sets the baseline above every background
    weight, so each background token is pushed away even in an image that passes (docs/results/srum_compworld.md,
    the background NLL of drift_probe.json). Under `prompt_global` the background carries only the global
    judgement's advantage, which cancels on background its siblings share; a region's raise stays a bonus.
    Measured on the built-in, neither beats `prompt` (10 minutes: 0.473 / 0.481 against 0.490 ± 0.007; the table's
    notes): sparing the background is not what SRUM's gain there waits for."""
    if how == "none":
        return weights
    if how == "batch":
        return weights - weights.mean()
    if weights.shape[0] % group:
        raise ValueError(f"a batch of {weights.shape[0]} samples is not whole groups of {group}")
    g = weights.view(-1, group, weights.shape[1])
    if how == "prompt":
        return (g - g.mean(dim=(1, 2), keepdim=True)).view_as(weights)
    if how == "prompt_token":
        return (g - g.mean(dim=1, keepdim=True)).view_as(weights)
    if how == "prompt_global":
        if background is None or background.shape != weights.shape[:1]:
            raise ValueError("centre prompt_global needs each sample's background level, shape (B,)")
        return (g - background.view(-1, group).mean(1)[:, None, None]).view_as(weights)
    if how == "prompt_scale":
        mean = g.mean(dim=(1, 2), keepdim=True)
        return torch.where(mean > 0, g / mean.clamp(min=1e-12), torch.zeros_like(g)).view_as(weights)
    raise ValueError(f"reward.centre {how!r}: one of none, batch, prompt, prompt_token, prompt_global, prompt_scale")
