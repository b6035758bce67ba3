"""Object phrases of a free-text prompt: what the local judge looks for in each region.

A small deterministic extractor (no model, no network), for T2I-CompBench-style prompts ("a red apple and a
green leaf", "a wooden table to the left of a cat", "three blue cups on a metallic tray"): the prompt is cut at
conjunctions, prepositions and relation phrases, and each piece keeps its last noun with the adjectives before
it, as a singular phrase with an article: "a red apple", "a wooden table", "a blue cup", "a metallic tray".
A prompt file can name the objects itself (`"objects": [...]`); this is only the default.
"""

from __future__ import annotations

import re

# Relations and joins that separate one object from the next (longest first, so "to the left of" wins over "of").
SEPARATORS = sorted([
    "and", "with", "next to", "near", "beside", "behind", "in front of", "on top of", "on the top of", "under",
    "underneath", "below", "above", "over", "on the left of", "on the right of", "to the left of", "to the right of",
    "on the side of", "at the side of", "on the bottom of", "left of", "right of", "on", "in", "inside", "by", "against", "between", "among", "around", "beneath",
    "holding", "wearing", "carrying", "riding", "eating", "playing with", "sitting on", "standing on", "looking at",
    "lying on", "hanging on", "leaning on", "while",
], key=lambda s: -len(s))
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
DETERMINERS = {"a", "an", "the", "some", "this", "that", "these", "those", "its", "his", "her", "their", "my", "our",
               "each", "every", "several", "many", "few", "multiple", "another", *NUMBERS}
# A verb or filler ends the noun phrase before it ("a blue car is parked" -> "a blue car").
ENDS = {"is", "are", "was", "were", "be", "being", "sits", "sit", "stands", "stand", "lies", "lie", "placed", "shown",
        "parked", "there", "together", "each", "other"}
_SPLIT = re.compile(r"\b(?:" + "|".join(re.escape(s) for s in SEPARATORS) + r")\b|[,;.!?]")


def singular(word: str) -> str:
    """A plural noun's singular, by the common English rules (no dictionary: 'glasses' -> 'glass')."""
    w = word.lower()
    for irregular, one in (("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child"),
                           ("mice", "mouse"), ("teeth", "tooth"), ("feet", "foot"), ("geese", "goose")):
        if w == irregular:
            return one
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return w[:-2]
    if len(w) > 2 and w.endswith("s") and not w.endswith(("ss", "us", "is", "as")):
        return w[:-1]
    return w


def object_phrases(prompt: str) -> list[str]:
    """The distinct object phrases of a prompt, in order ("a red apple", ...); the whole prompt as one phrase when
    no piece holds a word (a prompt of only relations)."""
    return _phrases(prompt) or [prompt.strip()]


def _phrases(prompt: str) -> list[str]:
    out: list[str] = []
    for piece in _SPLIT.split(prompt.lower()):
        words = re.findall(r"[a-z][a-z'-]*", piece)
        cut = next((i for i, w in enumerate(words) if w in ENDS), len(words))
        words = [w for w in words[:cut] if w not in DETERMINERS]
        if not words:
            continue
        head, rest = (words[: words.index("of")], words[words.index("of"):]) if "of" in words[1:] else (words, [])
        phrase = " ".join(head[:-1] + [singular(head[-1])] + rest) if head else " ".join(rest)
        full = f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"
        if full not in out:
            out.append(full)
    return out


# A free-text prompt's spatial relation in CompWorld's four words (T2I-CompBench's spatial prompts say "on the left
# of", "on the top of", "on the bottom of"); a relation without a direction ("next to", "near") names none.
DIRECTIONS = {"to the left of": "to the left of", "on the left of": "to the left of", "left of": "to the left of",
              "to the right of": "to the right of", "on the right of": "to the right of", "right of": "to the right of",
              "above": "above", "over": "above", "on top of": "above", "on the top of": "above",
              "below": "below", "under": "below", "underneath": "below", "beneath": "below", "on the bottom of": "below"}
_DIRECTION = re.compile(r"\b(" + "|".join(re.escape(s) for s in sorted(DIRECTIONS, key=lambda s: -len(s))) + r")\b")


def spatial_relation(prompt: str) -> tuple[list[str], list[tuple[int, str, int]]] | None:
    """"a bird on the left of a lamp" -> (["a bird", "a lamp"], [(0, "to the left of", 1)]): a prompt of one object, a
    direction and one object, as `object_phrases` names them; None for any other prompt (no direction, two of them,
    or a side that is not one object)."""
    found = _DIRECTION.findall(prompt.lower())
    if len(found) != 1:
        return None
    left, right = _DIRECTION.split(prompt.lower(), maxsplit=1)[::2]
    sides = [_phrases(left), _phrases(right)]
    if any(len(side) != 1 for side in sides):
        return None
    return [sides[0][0], sides[1][0]], [(0, DIRECTIONS[found[0]], 1)]
