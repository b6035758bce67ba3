"""CompWorld v1 renderer: place a spec's objects on the canvas and draw them."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .prompts import Spec
from .spec import BOX, CANVAS, COLORS, MIN_GAP, RENDER_REL_GAP, SHAPE_MASKS

MAX_TRIES = 1_000


@dataclass(frozen=True)
class Placed:
    color: str
    shape: str
    x0: int
    y0: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), x1 / y1 exclusive."""
        return (self.x0, self.y0, self.x0 + BOX, self.y0 + BOX)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + BOX / 2, self.y0 + BOX / 2)


def apart(a: tuple[int, int], b: tuple[int, int], gap: int = MIN_GAP) -> bool:
    """Two S-boxes with top-left corners a and b leave at least `gap` px between them."""
    return abs(a[0] - b[0]) >= BOX + gap or abs(a[1] - b[1]) >= BOX + gap


def relation_holds(a: tuple[float, float], rel: str, b: tuple[float, float], gap: float) -> bool:
    """Centre a stands in `rel` to centre b with at least `gap` px along the relation's axis."""
    if rel == "to the left of":
        return a[0] + gap <= b[0]
    if rel == "to the right of":
        return b[0] + gap <= a[0]
    if rel == "above":
        return a[1] + gap <= b[1]
    if rel == "below":
        return b[1] + gap <= a[1]
    raise ValueError(f"unknown relation {rel!r}")


_CORNERS = np.array([(x, y) for y in range(CANVAS - BOX + 1) for x in range(CANVAS - BOX + 1)])


def layout(spec: Spec, rng: random.Random) -> list[Placed]:
    """Random non-overlapping placement that satisfies the spec's relations.

    Objects are placed one at a time, each drawn uniformly from every corner still feasible given the
    ones already placed (relation targets first); a dead end restarts. Plain rejection sampling of
    whole layouts almost never finds e.g. three objects below a fourth on a 32 px canvas."""
    targets = {j for _, _, j in spec.relations}
    order = sorted(range(len(spec.objects)), key=lambda i: i not in targets)
    for _ in range(MAX_TRIES):
        corners: dict[int, tuple[int, int]] = {}
        for i in order:
            ok = np.ones(len(_CORNERS), bool)
            for c in corners.values():
                ok &= (np.abs(_CORNERS - c) >= BOX + MIN_GAP).any(1)
            for a, rel, b in spec.relations:
                if a == i and b in corners:
                    ok &= _holds(_CORNERS, rel, np.array(corners[b]))
                elif b == i and a in corners:
                    ok &= _holds(np.array(corners[a]), rel, _CORNERS)
            idx = np.flatnonzero(ok)
            if not len(idx):
                break
            corners[i] = tuple(int(v) for v in _CORNERS[idx[rng.randrange(len(idx))]])
        else:
            return [Placed(c, s, *corners[i]) for i, (c, s) in enumerate(spec.objects)]
    raise RuntimeError(f"could not place {spec.prompt!r} in {MAX_TRIES} tries")


def _holds(a: np.ndarray, rel: str, b: np.ndarray) -> np.ndarray:
    """Vectorised relation_holds on box corners (same box size, so corners order like centres)."""
    g = RENDER_REL_GAP
    if rel == "to the left of":
        return a[..., 0] + g <= b[..., 0]
    if rel == "to the right of":
        return b[..., 0] + g <= a[..., 0]
    if rel == "above":
        return a[..., 1] + g <= b[..., 1]
    return b[..., 1] + g <= a[..., 1]


def draw(objects: list[Placed]) -> np.ndarray:
    """H x W x 3 uint8 image: black background, each object one flat colour."""
    img = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    for o in objects:
        x0, y0, x1, y1 = o.box
        img[y0:y1, x0:x1][SHAPE_MASKS[o.shape]] = COLORS[o.color]
    return img


def render(spec: Spec, rng: random.Random) -> np.ndarray:
    return draw(layout(spec, rng))
