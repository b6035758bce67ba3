"""Fixed, seeded CompWorld v1 prompt sets: a held-out evaluation set and a training stream that
never yields a held-out prompt."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

from . import scenes as _scenes
from .prompts import Spec, enumerate_prompts, parse
from .spec import CATEGORIES

SPLIT_SEED = "compworld-v1-heldout"
# Small categories hold out a third of their prompts; the large ones 86 each: 300 prompts in all.
HELD_OUT = {"single": 6, "color": 86, "shape": 12, "spatial": 86, "numeracy": 24, "complex": 86}


@lru_cache(maxsize=1)
def _split() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    held, train = {}, {}
    for cat in CATEGORIES:
        prompts = enumerate_prompts(cat)
        random.Random(f"{SPLIT_SEED}/{cat}").shuffle(prompts)
        held[cat], train[cat] = prompts[: HELD_OUT[cat]], prompts[HELD_OUT[cat] :]
    return held, train


def heldout_set() -> list[Spec]:
    """The 300-prompt evaluation set, category by category, in a fixed order."""
    held, _ = _split()
    return [parse(p) for cat in CATEGORIES for p in held[cat]]


def eval_set(split: str = "validation", n: int | None = None) -> list[Spec]:
    """An evaluation set: `validation` / `test`, the held-out scenes of the scene split (srum/world/scenes.py:
    validation for choices, test for claims), or `heldout`, the 300 held-out wordings of the figures before it (whose
    scenes may also be training prompts'); the first `n` of it."""
    if split == "heldout":
        return heldout_set()[:n]
    if split not in ("validation", "test"):
        raise ValueError(f"evaluation split {split!r}: heldout, validation or test")
    from .scenes import prompts_of

    return prompts_of(split, n)


def training_prompts(category: str) -> list[str]:
    return _split()[1][category]


def training_spec(seed: int, index: int, scenes: bool = False) -> Spec:
    """Prompt number `index` of the training stream `seed`: uniform category, then uniform prompt.
    Random access by index, so a checkpoint only needs to remember its position.
    With `scenes`, the prompts are those of training scenes (`scenes.py`: no wording of a validation or test scene);
    without, today's split by wording (the default until the switch)."""
    rng = random.Random(f"train/{seed}/{index}")
    cat = rng.choice(CATEGORIES)
    return parse(rng.choice(_scenes.training_prompts(cat) if scenes else _split()[1][cat]))


def training_stream(seed: int, start: int = 0, scenes: bool = False) -> Iterator[Spec]:
    i = start
    while True:
        yield training_spec(seed, i, scenes)
        i += 1
