"""Region proposals: boxes where the judge looks for the prompt's objects.

- ComponentProposer: connected components of non-background pixels (largest first);
- GridProposer: a fixed grid of cells;
- load_proposer("module:function"): a hook for learned segmenters or detectors (e.g. SAM) on real
  images; the function takes an H x W x 3 uint8 image and returns (x0, y0, x1, y1) boxes.
Boxes are (x0, y0, x1, y1) with x1 / y1 exclusive.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

import numpy as np
from scipy import ndimage

Box = tuple[int, int, int, int]


class Proposer(Protocol):
    def __call__(self, image: np.ndarray) -> list[Box]: ...


class ComponentProposer:
    def __init__(self, min_area: int = 8, max_regions: int = 6, threshold: float = 60.0):
        self.min_area, self.max_regions, self.threshold = min_area, max_regions, threshold

    def __call__(self, image: np.ndarray) -> list[Box]:
        # Foreground = far enough from the black background; 8-connected so a blurry object stays whole.
        fg = np.linalg.norm(image.astype(np.float32), axis=-1) > self.threshold
        comp, _ = ndimage.label(fg, structure=np.ones((3, 3), bool))
        found = []
        for idx, sl in enumerate(ndimage.find_objects(comp), start=1):
            area = int((comp[sl] == idx).sum())
            if area >= self.min_area:
                found.append((area, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
        found.sort(key=lambda a: -a[0])
        return [box for _, box in found[: self.max_regions]]


class GridProposer:
    def __init__(self, cells: int = 2):
        self.cells = cells

    def __call__(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        ys, xs = np.linspace(0, h, self.cells + 1).astype(int), np.linspace(0, w, self.cells + 1).astype(int)
        return [(int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])) for i in range(self.cells) for j in range(self.cells)]


def load_proposer(spec: str) -> Callable[[np.ndarray], list[Box]]:
    """'module:function' -> that function, checked to be callable."""
    if ":" not in spec:
        raise ValueError(f"proposer {spec!r}: expected 'module:function'")
    mod, fn = spec.split(":", 1)
    obj = getattr(importlib.import_module(mod), fn, None)
    if not callable(obj):
        raise ValueError(f"proposer {spec!r}: {fn} is not a callable in {mod}")
    return obj
