"""CompWorld v1 constants, exactly as ../shared/compworld.md specifies them."""

import numpy as np

WORLD_VERSION = "compworld-v1"
CANVAS = 32
BOX = 10  # side S of every object's square box
MIN_GAP = 2  # boxes of two objects are at least this far apart
RENDER_REL_GAP = 4  # a renderer places related centres at least this far apart
CHECK_REL_GAP = 2  # the oracle accepts a relation at this margin
BACKGROUND_DISTANCE = 80.0  # a pixel farther than this from every colour (and black) is background

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 90, 255),
    "yellow": (240, 220, 30),
    "purple": (170, 50, 210),
    "white": (240, 240, 240),
}
SHAPES = ("square", "circle", "triangle")
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
RELATIONS = ("to the left of", "to the right of", "above", "below")
OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
CATEGORIES = ("single", "color", "shape", "spatial", "numeracy", "complex")


def shape_mask(shape: str, w: int = BOX, h: int = BOX) -> np.ndarray:
    """Boolean h x w mask, pixel centres at (i + 0.5, j + 0.5) in box coordinates. w = h = S is the
    world's shape; other sizes stretch the same definition (corrupted renders use them)."""
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # x: column, y: row
    if shape == "square":
        return np.ones((h, w), bool)
    if shape == "circle":
        return ((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2 <= 1.0
    if shape == "triangle":
        # Apex (w/2, 0), base corners (0, h) and (w, h): inside both slanted edges (a pixel centre is
        # always above the base).
        return y / h >= np.abs(2 * x / w - 1)
    raise ValueError(f"unknown shape {shape!r}")


SHAPE_MASKS = {s: shape_mask(s) for s in SHAPES}
