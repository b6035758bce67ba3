"""CompWorld v1 oracle: detect objects in any 32 x 32 RGB image and check it against a prompt."""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .prompts import Spec
from .render import relation_holds
from .spec import BACKGROUND_DISTANCE, CANVAS, CHECK_REL_GAP, COLORS

_NAMES = list(COLORS)  # label k < 6 is a colour; label 6 is black
_REFS = np.array([COLORS[c] for c in _NAMES] + [(0, 0, 0)], np.float64)
MIN_PIXELS = 12
MAX_ASPECT = 1.6
SQUARE_FILL = 0.88
CIRCLE_FILL = 0.66
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Detected:
    color: str
    shape: str  # square | circle | triangle | unknown
    box: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max (inclusive)
    pixels: int

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2)


def label_pixels(image: np.ndarray) -> np.ndarray:
    """Per pixel: index of the nearest colour (0..5), or -1 for black / farther than 80 (background)."""
    _check_image(image)
    d = np.linalg.norm(image.astype(np.float64)[:, :, None, :] - _REFS[None, None], axis=-1)
    lab = d.argmin(-1)
    lab[(lab == len(_NAMES)) | (d.min(-1) > BACKGROUND_DISTANCE)] = -1
    return lab


def classify_shape(w: int, h: int, pixels: int) -> str:
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return "unknown"
    fill = pixels / (w * h)
    if fill >= SQUARE_FILL:
        return "square"
    return "circle" if fill >= CIRCLE_FILL else "triangle"


def detect(image: np.ndarray) -> list[Detected]:
    """Every object the oracle sees, in a fixed order (colour, then scan order)."""
    return [d for d, *_ in _components(image) if d.pixels >= MIN_PIXELS]


# Per-pixel object labels (`object_map`): what each pixel belongs to under the world's rules.
MAP_COLORS = ["background", *_NAMES]
MAP_SHAPES = ["background", "square", "circle", "triangle", "unknown", "fragment"]  # fragment: < 12 px, dropped


def object_map(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour index into MAP_COLORS, shape index into MAP_SHAPES) per pixel, both (H, W) int64: the
    oracle's reading of every pixel. Training data for a model's understanding of renders and their
    corruptions (dense where a yes/no answer gives one bit); never a verdict on a model's own images."""
    colour = np.zeros(image.shape[:2], np.int64)
    shape = np.zeros(image.shape[:2], np.int64)
    for d, box, pixels in _components(image):
        colour[box][pixels] = MAP_COLORS.index(d.color)
        shape[box][pixels] = MAP_SHAPES.index(d.shape if d.pixels >= MIN_PIXELS else "fragment")
    return colour, shape


def _components(image: np.ndarray):
    """(Detected, its box as slices, its pixels within the box) per 4-connected single-colour component,
    fragments under 12 px included."""
    lab = label_pixels(image)
    for k, name in enumerate(_NAMES):
        comp, _n = ndimage.label(lab == k, structure=_FOUR_CONNECTED)
        for idx, sl in enumerate(ndimage.find_objects(comp), start=1):
            pixels = comp[sl] == idx
            area = int(pixels.sum())
            ys, xs = sl
            w, h = xs.stop - xs.start, ys.stop - ys.start
            box = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
            yield Detected(name, classify_shape(w, h, area), box, area), sl, pixels


def passes(image: np.ndarray, spec: Spec) -> bool:
    """The oracle's verdict: exact multiset of objects, and every relation for some assignment."""
    return check(image, spec)[0]


def check(image: np.ndarray, spec: Spec) -> tuple[bool, list[Detected]]:
    found = detect(image)
    got = sorted((d.color, d.shape) for d in found)
    if got != sorted(spec.objects):
        return False, found
    if not spec.relations:
        return True, found
    for perm in itertools.permutations(range(len(found))):
        # perm[i] is the detected object playing named object i
        if any((found[perm[i]].color, found[perm[i]].shape) != o for i, o in enumerate(spec.objects)):
            continue
        if all(
            relation_holds(found[perm[i]].centre, r, found[perm[j]].centre, CHECK_REL_GAP) for i, r, j in spec.relations
        ):
            return True, found
    return False, found


def failure(spec: Spec, found: list[Detected], passed: bool) -> str | None:
    """Why an image fails its prompt, in one phrase (None when it passes): the first that applies of an
    unknown shape, objects both missing and extra (a wrong shape or colour), an extra object, a missing
    object, or a relation that does not hold."""
    if passed:
        return None
    if any(d.shape == "unknown" for d in found):
        return "unknown shape"
    want, got = collections.Counter(spec.objects), collections.Counter((d.color, d.shape) for d in found)
    extra, missing = got - want, want - got
    if extra and missing:
        return "wrong shape or colour"
    return "extra object" if extra else "missing object" if missing else "relation"


def _check_image(image: np.ndarray) -> None:
    if image.shape != (CANVAS, CANVAS, 3):
        raise ValueError(f"CompWorld images are {CANVAS}x{CANVAS}x3; got shape {image.shape}")


COUNT_WORDS = ["a", "two", "three", "four", "five", "six", "seven", "eight"]  # beyond eight: "many"
DESCRIBE_WORDS = ["it", "shows", "nothing", "blob", "blobs", "five", "six", "seven", "eight", "many"]


def describe(image: np.ndarray, relations: bool = False) -> str:
    """What the oracle sees, in the prompts' words, in a fixed order (colour, then shape): "two red squares and a
    blue circle"; an object of no shape by the rules is a "blob"; an empty canvas is "nothing". Training text
    for a model's understanding (every image gets one, where a yes/no answer gives one bit).

    With `relations`, each group after the first is joined to the one before by how they stand ("a red square
    to the left of a blue circle", `group_relation`) where every object of one stands that way to every object
    of the other; by "and" where none does: relations named token by token, where a yes/no answer about a
    relation gives one bit (which a tiny judge did not learn from, foundation.md at tag archive/wordings-2026-12)."""
    groups = collections.defaultdict(list)
    for d in detect(image):
        groups[(d.color, d.shape)].append(d.centre)
    order = {s: i for i, s in enumerate(("square", "circle", "triangle", "unknown"))}
    keys = sorted(groups, key=lambda k: (_NAMES.index(k[0]), order[k[1]]))
    parts = []
    for c, s in keys:
        n = len(groups[(c, s)])
        noun = "blob" if s == "unknown" else s
        word = COUNT_WORDS[n - 1] if n <= len(COUNT_WORDS) else "many"
        parts.append(f"{word} {c} {noun}{'s' if n > 1 else ''}")
    if not parts:
        return "nothing"
    text = parts[0]
    for before, key, part in zip(keys, keys[1:], parts[1:]):
        joiner = group_relation(groups[before], groups[key]) if relations else None
        text += f" {joiner or 'and'} {part}"
    return text


def group_relation(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> str | None:
    """How every centre of `a` stands to every centre of `b` by at least the oracle's margin: one relation, or one
    of each axis joined by "and" on a diagonal ("above and to the left of"); None where none holds."""
    held = [r for r in ("above", "below", "to the left of", "to the right of")
            if all(relation_holds(p, r, q, CHECK_REL_GAP) for p in a for q in b)]
    return " and ".join(held) or None
