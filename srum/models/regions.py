"""Object tokens for the understanding expert: a segmenter's regions as extra image tokens.

VLMs with region features (LXMERT, UNITER) read a detector's regions as tokens: each one's appearance and its box
(x1, y1, x2, y2, w, h, area); SAM reports each mask with its box and area. The simplest segmenter for CompWorld's
flat paints is the one the vision encoder's palette already implies: 4-connected components of each paint. A
region token holds the component's paint, its box, its pixel count and two classical region descriptors, extent
and aspect (as skimage's regionprops reports them). A first version of stage 12 gave log sizes and the mask at
native resolution instead: after 500 steps its object tokens told squares from circles 40 % of the time and
elongated shapes 11 % (docs/results/foundation_mot.md), and a small MLP on those features fit the mask's 256 pixels
rather than the rules; ratios are what the world's shape words are about.

What the segmenter does not decide, the model learns from renders, captions and their corruptions: which
components count as objects (the world drops those under 12 px; tokens start at 3 px), which shape a mask is
by the world's rules, how many there are, where they stand, and whether that matches the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

MIN_PIXELS = 3  # smaller specks are noise, not proposals
N_PAINTS = 6  # the world's colours (the palette's black is background)
FEATURES = N_PAINTS + 10
# 4-connected within one image and one paint: axes (image, paint, y, x); nothing connects across the first two.
_STRUCTURE = np.zeros((3, 3, 3, 3), bool)
_STRUCTURE[1, 1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Region:
    paint: int  # index of the world's colour (0..5)
    ys: slice  # its bounding box
    xs: slice
    area: int  # pixel count

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of its bounding box."""
        return self.xs.stop - self.xs.start, self.ys.stop - self.ys.start


def components(paint: np.ndarray, k: int) -> list[list[Region]]:
    """paint: (B, H, W) int, index of the nearest of the world's paints (0..5) or -1 for background -> per image,
    its k largest 4-connected single-paint components of at least MIN_PIXELS, largest first (ties in scan order)."""
    masks = paint[:, None] == np.arange(N_PAINTS)[None, :, None, None]  # (B, paints, H, W)
    comp, _ = ndimage.label(masks, structure=_STRUCTURE)
    sizes = np.bincount(comp.ravel())
    found: list[list[tuple]] = [[] for _ in range(paint.shape[0])]
    for idx, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is not None and sizes[idx] >= MIN_PIXELS:
            found[sl[0].start].append((-int(sizes[idx]), idx, sl))
    return [[Region(sl[1].start, sl[2], sl[3], -neg) for neg, _, sl in sorted(regions)[:k]] for regions in found]


def region_features(paint: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """paint: (B, H, W) as for `components` -> (features (B, k, FEATURES) float32, pad (B, k) bool, True where
    an image has fewer than k regions)."""
    B, H, _ = paint.shape
    feats, pad = np.zeros((B, k, FEATURES), np.float32), np.ones((B, k), bool)
    for b, regions in enumerate(components(paint.cpu().numpy(), k)):
        for slot, r in enumerate(regions):
            feats[b, slot], pad[b, slot] = _one_region(r, H), False
    return torch.from_numpy(feats), torch.from_numpy(pad)


def _one_region(r: Region, size: int) -> np.ndarray:
    """One token's features: paint one-hot; box geometry (UNITER's 7, scaled by the canvas); the classical
    region descriptors extent (pixels / box area) and aspect (log2 w/h), and log2 of the pixel count."""
    (w, h), area, ys, xs = r.size, r.area, r.ys, r.xs
    out = np.zeros(FEATURES, np.float32)
    out[r.paint] = 1
    out[N_PAINTS : N_PAINTS + 10] = (
        xs.start / size, ys.start / size, xs.stop / size, ys.stop / size, w / size, h / size, area / size**2,
        area / (w * h), math.log2(w / h), math.log2(area) / math.log2(size * size),
    )
    return out
