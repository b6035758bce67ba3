"""From reward maps to the loss's per-token weights: pooled to the backend's token grid, then centred.

Centring is ours, not the paper's: every weight of the paper's map is positive, so most of it weighs the model's
own samples alike, which only adds noise. `prompt` (GRPO-style) measured best on the built-in (docs/findings.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CENTRES = ("none", "batch", "prompt")


def pool_to_tokens(maps: np.ndarray, grid: int) -> torch.Tensor:
    """(B, H, W) maps -> (B, grid * grid) token weights by area average (row-major, like patchify)."""
    t = torch.as_tensor(maps, dtype=torch.float32)[:, None]
    return F.adaptive_avg_pool2d(t, grid).flatten(1)


def centre(weights: torch.Tensor, how: str = "batch", group: int = 1) -> torch.Tensor:
    """Advantage centring of (B, N) token weights: `none`; `batch`, minus the batch's mean; `prompt`, minus the
    mean of every weight of the prompt's `group` consecutive samples."""
    if how == "none":
        return weights
    if how == "batch":
        return weights - weights.mean()
    if how != "prompt":
        raise ValueError(f"reward.centre {how!r}: one of {', '.join(CENTRES)}")
    if weights.shape[0] % group:
        raise ValueError(f"a batch of {weights.shape[0]} samples is not whole groups of {group}")
    g = weights.view(-1, group, weights.shape[1])
    return (g - g.mean(dim=(1, 2), keepdim=True)).view_as(weights)


def shuffled_within_groups(n: int, group: int, seed: int) -> list[int]:
    """For the matched control (`reward.shuffle`): an order of n samples in which each takes the place of another
    sample of its own group of `group` consecutive ones (its prompt's). A random cycle through each group, so no
    sample keeps its own judgement; the weights keep their magnitudes and lose what they said about the sample."""
    if group < 2 or n % group:
        raise ValueError(f"reward.shuffle needs whole groups of two or more samples per prompt ({n} samples, group {group})")
    rng, order = np.random.default_rng(seed), []
    for start in range(0, n, group):
        cycle = start + rng.permutation(group)
        source = dict(zip(cycle.tolist(), np.roll(cycle, -1).tolist()))  # each sample takes its successor's judgement
        order += [source[i] for i in range(start, start + group)]
    return order
