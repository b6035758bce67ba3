"""Word-level tokenizer for the CompWorld vocabulary (saved beside the model as tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..world.spec import COLORS, NUMBERS, SHAPES

SPECIALS = ["<pad>", "<bos>", "<ans>"]
WORDS = (
    ["a", "and", "to", "the", "left", "of", "right", "above", "below", "does", "image", "show", "?", "yes", "no"]
    + list(NUMBERS) + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES]
)
QUESTION = "does the image show {} ?"


class WordTokenizer:
    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.bos, self.ans = (self.index[s] for s in SPECIALS)
        self.yes, self.no = self.index["yes"], self.index["no"]

    @classmethod
    def default(cls) -> WordTokenizer:
        return cls(SPECIALS + WORDS)

    def ids(self, text: str) -> list[int]:
        out = []
        for w in text.split():
            if w not in self.index:
                raise ValueError(f"word {w!r} in {text!r} is not in the model's vocabulary")
            out.append(self.index[w])
        return out

    def batch(self, texts: list[str], length: int, answer: bool = False) -> torch.Tensor:
        """<bos> words [<ans>], right-padded to `length` -> LongTensor (B, length)."""
        rows = []
        for t in texts:
            row = [self.bos] + self.ids(t) + ([self.ans] if answer else [])
            if len(row) > length:
                raise ValueError(f"{t!r} is {len(row)} tokens; the model takes at most {length}")
            rows.append(row + [self.pad] * (length - len(row)))
        return torch.tensor(rows, dtype=torch.long)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"type": "word", "vocab": self.vocab}, indent=1))

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        return cls(json.loads(Path(path).read_text())["vocab"])
