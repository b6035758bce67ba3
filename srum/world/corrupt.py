"""Hard negatives for teaching a model to *understand* CompWorld images.

Three families, all made from renders only (never from a model's generations):
- text-side: a prompt perturbed by one detail (colour, shape, count, relation, or another prompt);
- scene-side: a scene with one object added, changed or removed, or two objects' shapes swapped (`edit_scene`),
  as generators err;
- image-side: corruptions of a render (a broken, smeared, dimmed, recoloured or misshapen object,
  a stray blob, an elastic warp, blur and noise over the whole image), and objects redrawn at other sizes
  (`resize`) or as a generator's lumpy blobs (`blob`).
A corrupted image is labelled by the world's own rules (`passes`), so a mild corruption that still
meets the prompt is a positive: the model learns where the boundary lies, not that "noisy = wrong".
"""

from __future__ import annotations

import random

import numpy as np
from scipy import ndimage

from .prompts import PromptError, Spec, parse, sample_prompt
from .render import Placed
from .scenes import is_training_prompt, sample_training_prompt
from .spec import BOX, CANVAS, COLORS, NUMBERS, OPPOSITE, RELATIONS, SHAPES, shape_mask

_NUM_WORD = {v: k for k, v in NUMBERS.items()}
_COLOR_LIST = list(COLORS)


def reverse_relation(spec: Spec) -> Spec:
    """The prompt with its first relation reversed (left <-> right, above <-> below): false on any render of `spec`."""
    rel = spec.relations[0][1]
    return parse(spec.prompt.replace(rel, OPPOSITE[rel], 1))


def perturb_prompt(spec: Spec, rng: random.Random, scenes: bool = False) -> Spec:
    """A grammatical prompt that differs from `spec` in one detail (or, sometimes, entirely).
    With `scenes`, only a prompt of a training scene (a perturbation that lands on a validation or test scene is
    drawn again, and the fallback draws training scenes); without, the whole grammar (today's default)."""
    for _ in range(50):
        try:
            out = parse(_perturb_words(spec, rng))
        except PromptError:
            continue
        if out.prompt != spec.prompt and (not scenes or is_training_prompt(out)):
            return out
    return sample_training_prompt(rng) if scenes else sample_prompt(rng)


def _perturb_words(spec: Spec, rng: random.Random) -> str:
    words = spec.prompt.split()
    kind = rng.choice(["color", "shape", "count", "relation", "other", "any"])
    if kind == "color":
        idx = [i for i, w in enumerate(words) if w in COLORS]
        words[rng.choice(idx)] = rng.choice(_COLOR_LIST)
    elif kind == "shape":
        i = rng.choice([i for i, w in enumerate(words) if w.rstrip("s") in SHAPES])
        plural = words[i].endswith("s")
        words[i] = rng.choice(SHAPES) + ("s" if plural else "")
    elif kind == "count" and words[0] in NUMBERS:
        n = rng.choice([k for k in (1, 2, 3, 4) if k != NUMBERS[words[0]]])
        words[0] = _NUM_WORD[n]
        words[2] = words[2].rstrip("s") + ("s" if n > 1 else "")
    elif kind == "relation" and spec.relations:
        rel = spec.relations[0][1]
        text = " ".join(words).replace(rel, rng.choice([r for r in RELATIONS if r != rel]))
        return text
    elif kind == "other":
        return sample_prompt(rng, spec.category).prompt
    else:
        return sample_prompt(rng).prompt
    return " ".join(words)


EDITS = ("add", "change", "remove", "swap")


def edit_scene(spec: Spec, rng: random.Random, kinds: tuple[str, ...] = EDITS[:3], scenes: bool = False) -> Spec:
    """`_edit_scene`; with `scenes`, an edit that makes a validation or test scene ("a red circle" changed into a
    held-out "a blue circle") is drawn again: its render would be an image of that scene in a loss. When the kinds
    asked cannot make a training scene (the one swap of "a red circle and a blue triangle" is held out), any kind
    is drawn, as an edit the scene cannot take becomes a change."""
    if not scenes:
        return _edit_scene(spec, rng, kinds)
    for k in (kinds, EDITS):
        for _ in range(100):
            out = _edit_scene(spec, rng, k)
            if is_training_prompt(out):
                return out
    raise RuntimeError(f"no edit of {spec.prompt!r} in 200 draws makes a training scene")


def _edit_scene(spec: Spec, rng: random.Random, kinds: tuple[str, ...]) -> Spec:
    """The scene of `spec` with one edit of the given kinds: an object added (a copy of a named object, or a named
    colour in another shape), changed (its shape or its colour) or removed, or two objects' shapes (or colours)
    swapped, which keeps every colour and every shape of the scene but binds them wrongly. Unlike `perturb_prompt`,
    the scene need not be one the grammar can say (two red circles for "a red circle"): these are the mistakes a
    generator makes, drawn from renders. The world holds at most four objects, so a full scene is not grown; an
    edit the scene cannot take (removing its only object, swapping in a scene of one kind) becomes a change."""
    objs, rels = list(spec.objects), list(spec.relations)
    kind = rng.choice([k for k in kinds if k != "add" or len(objs) < 4] or ["change"])
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs)) if objs[i] != objs[j]]
    if (kind == "remove" and len(objs) == 1) or (kind == "swap" and not pairs):
        kind = "change"
    if kind == "add":
        c, s = rng.choice(objs)
        objs.append((c, s) if rng.random() < 0.5 else (c, rng.choice([x for x in SHAPES if x != s])))
    elif kind == "change":
        i = rng.randrange(len(objs))
        c, s = objs[i]
        objs[i] = (c, rng.choice([x for x in SHAPES if x != s])) if rng.random() < 0.6 else \
            (rng.choice([x for x in _COLOR_LIST if x != c]), s)
    elif kind == "remove":
        i = rng.randrange(len(objs))
        del objs[i]
        rels = [(a - (a > i), r, b - (b > i)) for a, r, b in rels if i not in (a, b)]
    else:
        i, j = rng.choice(pairs)
        (ci, si), (cj, sj) = objs[i], objs[j]
        objs[i], objs[j] = ((ci, sj), (cj, si)) if si != sj else ((cj, si), (ci, sj))
    return Spec(f"{spec.prompt} (edited)", spec.category, tuple(objs), tuple(rels))


# ---- image-side corruptions: each takes the image and the placed objects, returns a new image ----


def _obj_slice(o: Placed):
    x0, y0, x1, y1 = o.box
    return slice(y0, y1), slice(x0, x1)


def erase_part(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Cut a rectangle out of one object (a broken object)."""
    o = rng.choice(objs)
    w, h = rng.randint(1, 7), rng.randint(1, 7)
    x, y = o.x0 + rng.randint(-2, BOX - 1), o.y0 + rng.randint(-2, BOX - 1)
    img[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 0
    return img


def stray_blob(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Paint an unrequested blob of some colour somewhere (possibly touching an object)."""
    w, h = rng.randint(2, 7), rng.randint(2, 7)
    x, y = rng.randint(0, CANVAS - w), rng.randint(0, CANVAS - h)
    img[y : y + h, x : x + w] = COLORS[rng.choice(_COLOR_LIST)]
    return img


def recolor(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Blend one object's colour toward another colour, or dim it toward black."""
    o = rng.choice(objs)
    sl = _obj_slice(o)
    patch = img[sl].astype(np.float32)
    on = patch.any(-1)
    target = np.zeros(3) if rng.random() < 0.4 else np.array(COLORS[rng.choice(_COLOR_LIST)], np.float32)
    a = rng.uniform(0.15, 0.9)
    patch[on] = (1 - a) * patch[on] + a * target
    img[sl] = patch.clip(0, 255).astype(np.uint8)
    return img


def misshape(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Redraw one object as a superellipse of another size and aspect (between circle, square, diamond)."""
    o = rng.choice(objs)
    cx, cy = o.centre
    sl = _obj_slice(o)
    img[sl][img[sl].any(-1)] = 0
    rx, ry = rng.uniform(2.5, 6.5), rng.uniform(2.5, 6.5)
    p = rng.choice([0.8, 1.0, 1.5, 2.0, 3.0, 6.0])
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    mask = np.abs((xx - cx) / rx) ** p + np.abs((yy - cy) / ry) ** p <= 1.0
    img[mask] = COLORS[o.color]
    return img


def resize(img: np.ndarray, objs: list[Placed], rng: random.Random, o: Placed | None = None) -> np.ndarray:
    """Redraw one object (`o`, or one drawn at random; usually as its own shape) at another size and aspect about
    its centre. The world's shapes are told apart by fill and aspect, not size: a small or stretched circle is
    still a circle when its pixels say so. Renders only ever show 10 px objects, and a generator's blobs are of any size."""
    o = o or rng.choice(objs)
    shape = o.shape if rng.random() < 0.7 else rng.choice(SHAPES)
    w, h = rng.randint(4, 14), rng.randint(4, 14)
    return _redraw(img, o, shape_mask(shape, w, h))


def _redraw(img: np.ndarray, o: Placed, box: np.ndarray) -> np.ndarray:
    """Erase object o and paint the (h, w) mask `box` in its colour, centred where it was (clipped at the canvas)."""
    sl = _obj_slice(o)
    img[sl][img[sl].any(-1)] = 0
    h, w = box.shape
    cx, cy = o.centre
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    mask = np.zeros((CANVAS, CANVAS), bool)
    ys, xs = slice(max(y0, 0), min(y0 + h, CANVAS)), slice(max(x0, 0), min(x0 + w, CANVAS))
    mask[ys, xs] = box[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    img[mask] = COLORS[o.color]
    return img


def blob(img: np.ndarray, objs: list[Placed], rng: random.Random, o: Placed) -> np.ndarray:
    """Redraw object `o` as a lumpy blob of its colour about its centre: a superellipse (exponent from diamond to
    square, usually near the object's own shape) roughened by smooth noise, at any size and aspect. This is how
    an undertrained generator draws, and where the world's rules are least obvious: any compact blob of low
    fill is a "triangle", a lump is a "circle" only above 0.66 fill. Labelled by those rules, both ways."""
    own = {"triangle": (0.6, 1.2), "circle": (1.6, 2.6), "square": (3.0, 8.0)}[o.shape]
    p = rng.uniform(*own) if rng.random() < 0.6 else rng.uniform(0.6, 8.0)
    w = rng.randint(4, 15)
    h = min(max(round(w * 2 ** rng.uniform(-0.9, 0.9)), 4), 15)
    r = np.random.default_rng(rng.getrandbits(32))
    noise = ndimage.gaussian_filter(r.normal(0, 1, (h, w)), rng.uniform(0.7, 2.0))
    noise *= rng.uniform(0.0, 0.8) / (noise.std() + 1e-8)
    y, x = (np.mgrid[0:h, 0:w] + 0.5) / np.array([h, w])[:, None, None] * 2 - 1
    box = np.abs(x) ** p + np.abs(y) ** p + noise <= 1.0
    if o.shape == "triangle" and rng.random() < 0.5:  # or a lumpy triangle proper
        box = shape_mask("triangle", w, h) & (noise * 0.5 <= rng.uniform(0.0, 0.3))
    return _redraw(img, o, box)


def smear(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Blur one object (and its surroundings) strongly."""
    o = rng.choice(objs)
    x0, y0, x1, y1 = o.box
    sl = slice(max(y0 - 3, 0), y1 + 3), slice(max(x0 - 3, 0), x1 + 3)
    img[sl] = ndimage.gaussian_filter(img[sl].astype(np.float32), (rng.uniform(0.7, 2.5),) * 2 + (0,)).round()
    return img


def shift(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Move one object a few pixels (it may touch, overlap or leave the canvas)."""
    o = rng.choice(objs)
    sl = _obj_slice(o)
    piece = img[sl].copy()
    img[sl] = 0
    dx, dy = rng.randint(-6, 6), rng.randint(-6, 6)
    x0, y0 = min(max(o.x0 + dx, 0), CANVAS - BOX), min(max(o.y0 + dy, 0), CANVAS - BOX)
    dst = img[y0 : y0 + BOX, x0 : x0 + BOX]
    on = piece.any(-1)
    dst[on] = piece[on]
    return img


def shatter(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Cut the image into cells and drop, move or copy some of them: fragmented objects and debris,
    as an undertrained generator draws them."""
    c = rng.choice([2, 3, 4, 5])
    out = img.copy()
    n = CANVAS // c
    for _ in range(rng.randint(3, 25)):
        (y, x), (y2, x2) = [(rng.randrange(n) * c, rng.randrange(n) * c) for _ in range(2)]
        op = rng.random()
        if op < 0.4:
            out[y : y + c, x : x + c] = 0
        else:
            out[y2 : y2 + c, x2 : x2 + c] = img[y : y + c, x : x + c]
    return out


def scatter(img: np.ndarray, objs: list[Placed], rng: random.Random) -> np.ndarray:
    """Blocks in the objects' colours strewn over the canvas instead of whole objects."""
    out = np.zeros_like(img) if rng.random() < 0.6 else img.copy()
    for _ in range(rng.randint(2, 20)):
        w, h = rng.randint(2, 6), rng.randint(2, 6)
        x, y = rng.randint(0, CANVAS - w), rng.randint(0, CANVAS - h)
        out[y : y + h, x : x + w] = COLORS[rng.choice(objs).color]
    return out


OBJECT_CORRUPTIONS = [erase_part, stray_blob, recolor, misshape, smear, shift, shatter, scatter]


def wobble(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Add or remove random pixels along every object's boundary: the irregular-but-recognisable
    outlines a generator draws. Often still within the rules (a positive), sometimes not."""
    out = img.copy()
    on = img.any(-1)
    edge_out = ndimage.binary_dilation(on) & ~on  # background pixels touching an object
    edge_in = on & ~ndimage.binary_erosion(on)  # object pixels touching the background
    r = np.random.default_rng(rng.getrandbits(32))
    p = rng.uniform(0.02, 0.2)
    grow = edge_out & (r.random(on.shape) < p)
    if grow.any():  # a grown pixel takes the colour of a neighbouring object pixel
        idx = ndimage.distance_transform_edt(~on, return_distances=False, return_indices=True)
        out[grow] = img[idx[0][grow], idx[1][grow]]
    out[edge_in & (r.random(on.shape) < p)] = 0
    return out


def warp(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Move every pixel along a smooth random displacement field (elastic deformation): lumpy, stretched,
    pinched or split objects — the blobs an undertrained generator draws, much more than pixel-level
    wobble. Nearest-pixel sampling keeps the palette. Mild warps still meet the prompt (positives); the
    judge scored such warped renders about as well as it scores its own generator's images (balanced
    accuracy 0.69 against 0.73), which is what makes them the right hard examples."""
    r = np.random.default_rng(rng.getrandbits(32))
    amp, smooth = rng.uniform(0.5, 3.0), rng.uniform(1.2, 3.5)  # pixels of displacement, its correlation length
    field = [ndimage.gaussian_filter(r.normal(0, 1, (CANVAS, CANVAS)), smooth) for _ in range(2)]
    dy, dx = (f * (amp / (f.std() + 1e-8)) for f in field)
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float64)
    return np.stack([ndimage.map_coordinates(img[..., c], [yy + dy, xx + dx], order=0, mode="constant")
                     for c in range(img.shape[-1])], -1)


def global_noise(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Elastic warps or wobbly outlines, blur and pixel noise over the whole image, like an imperfect
    generator's output."""
    kind = rng.random()
    if kind < 0.35:
        img = warp(img, rng)
    elif kind < 0.7:
        img = wobble(img, rng)
    x = img.astype(np.float32)
    if rng.random() < 0.4:
        x = ndimage.gaussian_filter(x, (rng.uniform(0.3, 0.9),) * 2 + (0,))
    if rng.random() < 0.6:
        x = x + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 30), x.shape)
    return x.clip(0, 255).round().astype(np.uint8)


def corrupt(img: np.ndarray, objs: list[Placed], rng: random.Random, n_object: int) -> np.ndarray:
    img = img.copy()
    for _ in range(n_object):
        img = rng.choice(OBJECT_CORRUPTIONS)(img, objs, rng)
    return global_noise(img, rng)


def crop_region(img: np.ndarray, box: tuple[int, int, int, int], pad: int = 1) -> np.ndarray:
    """Keep only the pixels inside a box (padded), black elsewhere, at the same position:
    how a region is shown to the understanding head for a local judgement."""
    x0, y0, x1, y1 = box
    out = np.zeros_like(img)
    h, w = img.shape[:2]  # any resolution: a model may draw at its own
    sl = slice(max(y0 - pad, 0), min(y1 + pad, h)), slice(max(x0 - pad, 0), min(x1 + pad, w))
    out[sl] = img[sl]
    return out
