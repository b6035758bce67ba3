"""CompWorld on disk: prompt files (JSONL), PNG images and manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import InputError, atomic_write, read_jsonl
from .prompts import PromptError, Spec, parse
from .spec import CANVAS


def read_prompts(path: Path) -> list[Spec]:
    """JSONL with "prompt" (and optional "category") per line; errors name the file and line."""
    specs = []
    for n, obj in read_jsonl(path):
        if not isinstance(obj.get("prompt"), str):
            raise InputError(f"{path}:{n}: missing string field 'prompt'")
        try:
            spec = parse(obj["prompt"])
        except PromptError as e:
            raise InputError(f"{path}:{n}: {e}") from None
        if "category" in obj and obj["category"] != spec.category:
            raise InputError(f"{path}:{n}: category {obj['category']!r} does not match the prompt (it is {spec.category!r})")
        specs.append(spec)
    if not specs:
        raise InputError(f"{path}: no prompts")
    return specs


def write_png(path: Path, image: np.ndarray) -> None:
    atomic_write(path, lambda p: Image.fromarray(image, "RGB").save(p, format="PNG"))


def read_png(path: Path) -> np.ndarray:
    """A 32 x 32 RGB image; anything else (missing, unreadable, another size or mode) is an InputError naming
    the file. Grey and palette images are refused rather than converted: a CompWorld image is RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            img = np.asarray(im.convert("RGB")) if mode in ("RGB", "RGBA") else None
    except FileNotFoundError:
        raise InputError(f"{path}: no such image") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken files; all mean "not a readable image"
        raise InputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if size != (CANVAS, CANVAS):
        raise InputError(f"{path}: CompWorld images are {CANVAS}x{CANVAS}; got {size[0]}x{size[1]}")
    if img is None:
        raise InputError(f"{path}: CompWorld images are RGB; got mode {mode}")
    if mode == "RGBA" and (np.asarray(im)[..., 3] != 255).any():
        raise InputError(f"{path}: has transparent pixels; CompWorld images are RGB")
    return img


def read_manifest(path: Path) -> list[tuple[Path, Spec, dict]]:
    """(image path, spec, the row) per manifest line; paths are relative to the manifest's folder."""
    rows = []
    for n, obj in read_jsonl(path):
        for key in ("file", "prompt"):
            if not isinstance(obj.get(key), str):
                raise InputError(f"{path}:{n}: missing string field {key!r}")
        try:
            spec = parse(obj["prompt"])
        except PromptError as e:
            raise InputError(f"{path}:{n}: {e}") from None
        f = Path(path).parent / obj["file"]
        if not f.exists():
            raise InputError(f"{path}:{n}: image {obj['file']!r} not found next to the manifest")
        rows.append((f, spec, obj))
    return rows
