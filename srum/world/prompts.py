"""CompWorld v1 prompt grammar: parse a prompt into a scene spec, and sample prompts per category.

A `Spec` is what a prompt asks for: the named objects (colour, shape) and the relations that must
hold between them, as (i, relation, j) over object indices.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

from .spec import CATEGORIES, COLORS, NUMBERS, RELATIONS, SHAPES

NUMBER_WORDS = {v: k for k, v in NUMBERS.items()}
_C = "(" + "|".join(COLORS) + ")"
_S = "(" + "|".join(SHAPES) + ")"
_REL = "(" + "|".join(RELATIONS) + ")"
_N = "(" + "|".join(NUMBERS) + ")"


class PromptError(ValueError):
    """A prompt outside the CompWorld v1 grammar."""


@dataclass(frozen=True)
class Spec:
    prompt: str
    category: str
    objects: tuple[tuple[str, str], ...]  # (colour, shape) per named object
    relations: tuple[tuple[int, str, int], ...] = ()


def _plural(shape: str) -> str:
    return shape + "s"


_TEMPLATES = [
    ("single", re.compile(rf"a {_C} {_S}")),
    ("pair", re.compile(rf"a {_C} {_S} and a {_C} {_S}")),
    ("spatial", re.compile(rf"a {_C} {_S} {_REL} a {_C} {_S}")),
    ("numeracy", re.compile(rf"{_N} {_C} {_S}s")),
    ("numeracy_one", re.compile(rf"one {_C} {_S}")),
    ("complex", re.compile(rf"{_N} {_C} {_S}s {_REL} a {_C} {_S}")),
]


def parse(prompt: str) -> Spec:
    """Parse one prompt; raise PromptError naming the rule it breaks."""
    p = prompt.strip()
    for kind, rx in _TEMPLATES:
        m = rx.fullmatch(p)
        if m:
            return _spec(kind, p, m.groups())
    raise PromptError(f"{prompt!r} matches no CompWorld v1 template")


def _spec(kind: str, p: str, g: tuple[str, ...]) -> Spec:
    if kind == "single":
        return Spec(p, "single", ((g[0], g[1]),))
    if kind == "pair":
        c1, s1, c2, s2 = g
        if c1 != c2:
            return Spec(p, "color", ((c1, s1), (c2, s2)))
        if s1 != s2:
            return Spec(p, "shape", ((c1, s1), (c2, s2)))
        raise PromptError(f"{p!r}: two identical objects (color needs c1 != c2, shape needs s1 != s2)")
    if kind == "spatial":
        c1, s1, rel, c2, s2 = g
        if (c1, s1) == (c2, s2):
            return _bad(p, "spatial needs (c1, s1) != (c2, s2)")
        return Spec(p, "spatial", ((c1, s1), (c2, s2)), ((0, rel, 1),))
    if kind == "numeracy":
        n = NUMBERS[g[0]]
        if n < 2:
            return _bad(p, "'one' takes the singular: 'one {c} {s}'")
        return Spec(p, "numeracy", ((g[1], g[2]),) * n)
    if kind == "numeracy_one":
        return Spec(p, "numeracy", ((g[0], g[1]),))
    n = NUMBERS[g[0]]
    if n not in (2, 3):
        return _bad(p, "complex takes n = two or three")
    c1, s1, rel, c2, s2 = g[1:]
    objs = ((c1, s1),) * n + ((c2, s2),)
    return Spec(p, "complex", objs, tuple((i, rel, n) for i in range(n)))


def _bad(p: str, why: str) -> Spec:
    raise PromptError(f"{p!r}: {why}")


def enumerate_prompts(category: str) -> list[str]:
    """Every prompt of a category, in a fixed order (the whole grammar is small: ~4,200 prompts)."""
    objs = list(itertools.product(COLORS, SHAPES))
    if category == "single":
        return [f"a {c} {s}" for c, s in objs]
    if category == "color":
        return [f"a {c1} {s1} and a {c2} {s2}" for (c1, s1), (c2, s2) in itertools.product(objs, objs) if c1 != c2]
    if category == "shape":
        return [f"a {c} {s1} and a {c} {s2}" for c in COLORS for s1 in SHAPES for s2 in SHAPES if s1 != s2]
    if category == "spatial":
        return [
            f"a {c1} {s1} {r} a {c2} {s2}"
            for (c1, s1), r, (c2, s2) in itertools.product(objs, RELATIONS, objs)
            if (c1, s1) != (c2, s2)
        ]
    if category == "numeracy":
        return [f"one {c} {s}" for c, s in objs] + [
            f"{NUMBER_WORDS[n]} {c} {_plural(s)}" for n in (2, 3, 4) for c, s in objs
        ]
    if category == "complex":
        return [
            f"{NUMBER_WORDS[n]} {c1} {_plural(s1)} {r} a {c2} {s2}"
            for n in (2, 3)
            for (c1, s1), r, (c2, s2) in itertools.product(objs, RELATIONS, objs)
        ]
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def sample_prompt(rng: random.Random, category: str | None = None) -> Spec:
    """A uniformly drawn prompt of `category` (uniform category when None)."""
    cat = category or rng.choice(CATEGORIES)
    return parse(rng.choice(_all_prompts()[cat]))


_CACHE: dict[str, list[str]] = {}


def _all_prompts() -> dict[str, list[str]]:
    if not _CACHE:
        _CACHE.update({c: enumerate_prompts(c) for c in CATEGORIES})
    return _CACHE
