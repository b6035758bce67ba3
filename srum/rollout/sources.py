"""Prompt sources: the CompWorld training stream, or a prompt file (JSONL lines with "prompt", or a
T2I-CompBench-style JSON list of strings or {"prompt": ...} objects). Random access by position, so a
checkpoint only records where it was."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import InputError
from ..world import PromptError, Spec, parse, training_spec
from ..world.files import read_prompts


class CompWorldSource:
    def __init__(self, seed: int):
        self.seed = seed

    def take(self, start: int, n: int) -> list[Spec]:
        return [training_spec(self.seed, start + i) for i in range(n)]


class FileSource:
    """Cycles through a prompt file in order."""

    def __init__(self, path: Path):
        path = Path(path)
        self.specs = read_prompts(path) if path.suffix == ".jsonl" else _read_json(path)

    def take(self, start: int, n: int) -> list[Spec]:
        return [self.specs[(start + i) % len(self.specs)] for i in range(n)]


def _read_json(path: Path) -> list[Spec]:
    if not path.exists():
        raise InputError(f"{path}: no such prompt file")
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: expected a non-empty JSON list of prompts")
    specs = []
    for i, item in enumerate(items):
        text = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InputError(f"{path}: item {i}: expected a string or an object with a string 'prompt'")
        try:
            specs.append(parse(text))
        except PromptError as e:
            raise InputError(f"{path}: item {i}: {e}") from None
    return specs


def prompt_source(name: str, seed: int):
    return CompWorldSource(seed) if name == "compworld" else FileSource(Path(name))
