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
CATEGORIES = ("single", "color", "shape", "spatial", "numeracy", "complex")


def _shape_mask(shape: str) -> np.ndarray:
    """Boolean S x S mask, pixel centres at (i + 0.5, j + 0.5) in box coordinates."""
    s = BOX
    c = np.arange(s) + 0.5
    x, y = np.meshgrid(c, c)  # x: column, y: row
    if shape == "square":
        return np.ones((s, s), bool)
    if shape == "circle":
        return (x - s / 2) ** 2 + (y - s / 2) ** 2 <= (s / 2) ** 2
    if shape == "triangle":
        # Apex (S/2, 0), base corners (0, S) and (S, S): inside both slanted edges, above the base.
        left = y >= 2 * (s / 2 - x)  # right of the edge apex -> (0, S)
        right = y >= 2 * (x - s / 2)  # left of the edge apex -> (S, S)
        return left & right & (y <= s)
    raise ValueError(f"unknown shape {shape!r}")


SHAPE_MASKS = {s: _shape_mask(s) for s in SHAPES}
