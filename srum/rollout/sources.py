"""Prompt sources: the CompWorld training stream, or a prompt file. Random access by position, so a
checkpoint only records where it was.

Prompt files (any prompts, not only CompWorld's):
- `.txt`: one prompt a line (T2I-CompBench's files); blank lines and lines starting with # are skipped;
- `.jsonl`: one object a line, {"prompt": str, "category": str?, "objects": [str, ...]?};
- `.json`: a list of strings or of such objects.
`objects` are the phrases the local judge looks for in each region. Without them, a prompt in CompWorld's
grammar gets its scene's objects, and any other prompt the phrase extractor's (`phrases.object_phrases`).
A CompWorld prompt keeps its scene (`spec`), so the oracle checks its images; others are judged alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..io import InputError, read_jsonl
from ..world import PromptError, Spec, parse, training_spec
from .phrases import object_phrases, spatial_relation


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    category: str
    objects: tuple[str, ...]  # what the local judge checks, one phrase per distinct object
    spec: Spec | None = None  # the CompWorld scene, when the prompt is in its grammar: the oracle applies
    # where the prompt says its objects stand (what the judge reads off its regions, rewards/relations.py): each named
    # object's phrase by index, and (i, relation, j) over those indices; empty when it says nothing the judge can read
    named: tuple[str, ...] = ()
    relations: tuple[tuple[int, str, int], ...] = ()


def item(prompt: str, category: str | None = None, objects: list[str] | None = None) -> PromptItem:
    try:
        spec = parse(prompt)
    except PromptError:
        spec = None
    if spec is not None:
        named = tuple(f"a {c} {s}" for c, s in spec.objects)  # by index, as the relations name them
        return PromptItem(spec.prompt, category or spec.category, tuple(objects or sorted(set(named))), spec, named,
                          spec.relations)
    named, relations = spatial_relation(prompt) or ([], [])
    return PromptItem(prompt.strip(), category or "free", tuple(objects or object_phrases(prompt)), None, tuple(named), tuple(relations))


def from_spec(spec: Spec) -> PromptItem:
    return item(spec.prompt, spec.category)


def read_prompt_file(path: Path) -> list[PromptItem]:
    """Every prompt of a .txt, .jsonl or .json file; an error names the file and the line (or item)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such prompt file")
    if path.suffix == ".txt":
        items = [item(line.strip()) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    elif path.suffix == ".jsonl":
        items = [_item(obj, f"{path}:{n}") for n, obj in read_jsonl(path)]
    elif path.suffix == ".json":
        items = [_item(obj if isinstance(obj, dict) else {"prompt": obj}, f"{path}: item {i}") for i, obj in enumerate(_json_list(path))]
    else:
        raise InputError(f"{path}: prompt files are .txt (one prompt a line), .jsonl or .json")
    if not items:
        raise InputError(f"{path}: no prompts")
    return items


def _item(obj: dict, where: str) -> PromptItem:
    text, cat, objs = obj.get("prompt"), obj.get("category"), obj.get("objects")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: missing string field 'prompt'")
    if cat is not None and not isinstance(cat, str):
        raise InputError(f"{where}: 'category' must be a string")
    if objs is not None and (not isinstance(objs, list) or not objs or not all(isinstance(o, str) and o.strip() for o in objs)):
        raise InputError(f"{where}: 'objects' must be a non-empty list of phrases")
    unknown = sorted(set(obj) - {"prompt", "category", "objects"})
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (a prompt has prompt, category, objects)")
    it = item(text, cat, objs)
    if it.spec is not None and cat is not None and cat != it.spec.category:
        raise InputError(f"{where}: category {cat!r} does not match the CompWorld prompt (it is {it.spec.category!r})")
    return it


def _json_list(path: Path) -> list:
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: expected a non-empty JSON list of prompts")
    for i, obj in enumerate(items):
        if not isinstance(obj, (str, dict)):
            raise InputError(f"{path}: item {i}: expected a string or an object with a string 'prompt'")
    return items


class CompWorldSource:
    """CompWorld's training stream; with `scenes`, of training scenes only (srum/world/scenes.py)."""

    def __init__(self, seed: int, scenes: bool = False):
        self.seed, self.scenes = seed, scenes

    def take(self, start: int, n: int) -> list[PromptItem]:
        return [from_spec(training_spec(self.seed, start + i, scenes=self.scenes)) for i in range(n)]


class FileSource:
    """Cycles through a prompt file in order."""

    def __init__(self, path: Path):
        self.items = read_prompt_file(Path(path))

    def take(self, start: int, n: int) -> list[PromptItem]:
        return [self.items[(start + i) % len(self.items)] for i in range(n)]


def prompt_source(name: str, seed: int, scenes: bool = False):
    return CompWorldSource(seed, scenes) if name == "compworld" else FileSource(Path(name))
