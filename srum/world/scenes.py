"""Scenes, not wordings: a prompt's canonical scene, and a seeded train / validation / test split of scenes.

Many prompts describe one scene: "a red circle" = "one red circle", "a red circle and a blue square" = "a blue
square and a red circle", "A to the left of B" = "B to the right of A". A split by prompt string puts such twins
on both sides; a split by scene puts every wording of a scene on one side.

A `Scene` is the prompt's objects as a multiset of groups (count, colour, shape) — "two red circles" is one group
of two — and its relations between groups, each turned into one direction (right of -> left of with the groups
swapped, below -> above). A group, not a single object, is what a relation names: "two red circles to the left of
a red circle" and "... to the right of ..." hold the same three circles but are different scenes.

The split is by *family*: every scene of the same objects ("a red circle and a blue square", "a red circle to the
left of a blue square", ... above ..., and the reversals; "three red circles" and "two red circles above a red
circle") goes to one side. A render of "A to the left of B" IS an image of "a A and a B" (the oracle passes it, and
`oracle.describe` writes it out), so a split by scene alone would put images of held-out scenes into every loss;
split by family, no clean render of a training prompt passes any validation or test prompt.
Families are drawn per category (a family's category: the first in CATEGORIES of its prompts, so spatial scenes
ride with their colour or shape family, "one X" with "a X", complex ones of one shape with numeracy) by a keyed
hash, so the split is fixed by SCENE_SEED alone and no list of prompts is kept anywhere.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .oracle import detect, passes
from .prompts import Spec, enumerate_prompts, parse
from .spec import CATEGORIES

SCENE_SEED = "compworld-v1-scenes"
SPLITS = ("train", "validation", "test")
# Families per category in each of validation and test: a sixth of single, shape and numeracy (training keeps two
# thirds); colour and complex so that each split holds about 300 prompts, every wording counted. A colour or shape
# family brings 4 spatial scenes (8 prompts): spatial has no families of its own.
HELD_FAMILIES = {"single": 3, "color": 15, "shape": 3, "spatial": 0, "numeracy": 9, "complex": 20}
_CANONICAL = {"to the right of": "to the left of", "below": "above"}  # the direction each relation is turned into

Group = tuple[int, str, str]  # (count, colour, shape)


@dataclass(frozen=True, order=True)
class Scene:
    objects: tuple[Group, ...]  # sorted
    relations: tuple[tuple[Group, str, Group], ...] = ()  # sorted; only "to the left of" and "above"


def scene_of(spec: Spec | str) -> Scene:
    """The canonical scene of a prompt (or of any Spec, e.g. an edited one: then it is a key that tells whether the
    spec is a scene the grammar can say; grammar scenes never have two groups of one (count, colour, shape))."""
    spec = parse(spec) if isinstance(spec, str) else spec
    # Objects of one colour and shape that take part in the same relations (by the other end's index) are one group:
    # the n subjects of a complex prompt, the n objects of a numeracy one.
    role = [(spec.objects[i],
             frozenset((r, j) for a, r, j in spec.relations if a == i),
             frozenset((r, a) for a, r, j in spec.relations if j == i)) for i in range(len(spec.objects))]
    size = Counter(role)
    group = {k: (n, *k[0]) for k, n in size.items()}
    rels = set()
    for a, r, b in spec.relations:
        ga, gb = group[role[a]], group[role[b]]
        if r in _CANONICAL:
            ga, gb, r = gb, ga, _CANONICAL[r]
        rels.add((ga, r, gb))
    return Scene(tuple(sorted(group.values())), tuple(sorted(rels)))


def family_of(scene: Scene) -> tuple[tuple[str, str], ...]:
    """The scene's objects, one (colour, shape) per object, sorted: what every image of the scene shows."""
    return tuple(sorted((c, s) for n, c, s in scene.objects for _ in range(n)))


@lru_cache(maxsize=1)
def _table() -> tuple[dict[tuple, str], dict[Scene, str], dict[str, dict[str, list[str]]]]:
    """(family -> its category, scene -> split, split -> prompt category -> prompts in split order)."""
    home: dict[tuple, str] = {}
    wordings: dict[tuple, dict[Scene, list[str]]] = {}  # family -> scene -> wordings, in grammar order
    for cat in CATEGORIES:
        for p in enumerate_prompts(cat):
            s = scene_of(p)
            home.setdefault(family_of(s), cat)
            wordings.setdefault(family_of(s), {}).setdefault(s, []).append(p)
    split: dict[Scene, str] = {}
    prompts: dict[str, dict[str, list[str]]] = {x: {c: [] for c in CATEGORIES} for x in SPLITS}
    for cat in CATEGORIES:
        families = sorted((f for f in home if home[f] == cat), key=_key)
        k = HELD_FAMILIES[cat]
        for i, f in enumerate(families):
            side = "validation" if i < k else "test" if i < 2 * k else "train"
            for s, ps in wordings[f].items():  # every wording of every scene, each under its own prompt category
                split[s] = side
                for p in ps:
                    prompts[side][parse(p).category].append(p)
    return home, split, prompts


def _key(family: tuple) -> bytes:
    """A keyed hash of the family: its rank in its category decides its split."""
    return hashlib.blake2b(repr(family).encode(), key=SCENE_SEED.encode(), digest_size=16).digest()


def split_of(scene: Scene | Spec | str) -> str:
    """"train", "validation" or "test" for a scene the grammar can say (a Scene, a Spec or a prompt)."""
    s = scene if isinstance(scene, Scene) else scene_of(scene)
    try:
        return _table()[1][s]
    except KeyError:
        raise ValueError(f"{s} is no CompWorld v1 scene") from None


def is_training_prompt(prompt_or_spec: Spec | str) -> bool:
    """Whether a prompt may reach a loss: its scene is no validation or test scene. A spec the grammar cannot say
    (an edited scene: two objects too many) is never evaluated, so it may."""
    return _table()[1].get(scene_of(prompt_or_spec), "train") == "train"


def prompts_of(split: str, n: int | None = None) -> list[Spec]:
    """The prompts of a split, category by category (in CATEGORIES order, "one X" under numeracy), EVERY wording
    of each of its scenes: a held-out scene is held out in every wording, so evaluating all of them involves no
    choice of wording, and tests that "B to the right of A" is read as well as "A to the left of B".
    With n, the first n of an order that takes each category in proportion to its size (what
    heldout_set()[:n] is for today), still returned category by category."""
    by_cat = _table()[2][split]
    if n is None:
        return [parse(p) for c in CATEGORIES for p in by_cat[c]]
    ranked = sorted(((i + 0.5) / len(ps), CATEGORIES.index(c), i) for c, ps in by_cat.items() for i in range(len(ps)))
    keep = sorted((ci, i) for _, ci, i in ranked[:n])
    return [parse(by_cat[CATEGORIES[ci]][i]) for ci, i in keep]


def training_prompts(category: str) -> list[str]:
    """The training prompts of a prompt category, in split order."""
    return _table()[2]["train"][category]


def sample_training_prompt(rng: random.Random, category: str | None = None) -> Spec:
    """`sample_prompt` over training scenes only: a uniform category (when None), then a uniform training prompt."""
    cat = category or rng.choice(CATEGORIES)
    return parse(rng.choice(training_prompts(cat)))



def shows_heldout(image: np.ndarray) -> bool:
    """Whether the oracle, reading the image alone, passes it for a validation or test prompt: a noisy, warped or
    corrupted render of a training prompt can show a held-out scene (a warped circle read as a triangle), and
    `oracle.describe` would then name it. Only prompts of the objects detected can pass, so this is cheap."""
    shown = tuple(sorted((d.color, d.shape) for d in detect(image)))
    return any(passes(image, h) for h in _heldout_by_family().get(shown, ()))


@lru_cache(maxsize=1)
def _heldout_by_family() -> dict[tuple, list[Spec]]:
    out: dict[tuple, list[Spec]] = {}
    for side in ("validation", "test"):
        for spec in prompts_of(side):
            out.setdefault(family_of(scene_of(spec)), []).append(spec)
    return out
