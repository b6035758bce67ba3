"""The dense reward map: a global score and region scores -> a float32 H x W map -> per-token weights.

Paper form (default): 0.5 everywhere; each region raised to (s_r + 1) / 2 where that is larger; the
whole map times (g + 1) / 2. A negatively judged region is never pushed below the background.
Uniform (the control): 1 everywhere, whatever the judge says. The learner pools the map to its token
grid and centres it (srum/learner/advantages.py).
"""

from __future__ import annotations

import numpy as np

from .proposals import Box


def reward_map(g: float, regions: list[tuple[Box, float]], size: tuple[int, int], use_global: bool = True,
               use_local: bool = True, binarize: bool = False, uniform: bool = False) -> np.ndarray:
    """`binarize`: each score becomes +1 where the judge says yes (P(yes) > 0.5), else -1."""
    h, w = size
    if uniform:  # the control: no reward at all
        return np.ones((h, w), np.float32)
    if binarize:
        g = 1.0 if g > 0 else -1.0
        regions = [(b, 1.0 if s > 0 else -1.0) for b, s in regions]
    m = np.full((h, w), 0.5, np.float32)
    if use_local:
        for (x0, y0, x1, y1), s in regions:
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)  # boxes may reach outside
            if x1 <= x0 or y1 <= y0:
                continue
            v = (float(np.clip(s, -1, 1)) + 1) / 2
            m[y0:y1, x0:x1] = np.maximum(m[y0:y1, x0:x1], v)
    if use_global:
        m = m * (float(np.clip(g, -1, 1)) + 1) / 2
    return m
