"""The built-in's words: CompWorld's vocabulary, which the pretraining recipe builds the tokenizer from."""

from __future__ import annotations

from ..world.spec import COLORS, NUMBERS, SHAPES

WORDS = (
    ["a", "and", "to", "the", "left", "of", "right", "above", "below", "does", "image", "show", "?", "yes", "no"]
    + list(NUMBERS) + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES]
)
QUESTION = "does the image show {} ?"
