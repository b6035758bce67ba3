"""Region proposals: boxes where the judge looks for the prompt's objects.

- ComponentProposer: connected components of non-background pixels (largest first): CompWorld's flat colours;
- GridProposer: a fixed grid of cells;
- DetectorProposer: a transformers zero-shot detector from a local directory (OWLv2, OWL-ViT, Grounding DINO),
  asked for the prompt's object phrases: regions for real images. The judge still filters them: a box in which
  the model recognises none of the prompt's objects is scored low or dropped (`reward.unmatched`);
- load_proposer("module:function"): any other segmenter (e.g. SAM's automatic masks turned into boxes); the
  function takes an H x W x 3 uint8 image (and, if it has a second parameter, the phrases) and returns boxes.
Every proposer is called as proposer(image, phrases). Boxes are (x0, y0, x1, y1) with x1 / y1 exclusive.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage

Box = tuple[int, int, int, int]


class Proposer(Protocol):
    def __call__(self, image: np.ndarray, phrases: tuple[str, ...] = ()) -> list[Box]: ...


class ComponentProposer:
    def __init__(self, min_area: int = 8, max_regions: int = 6, threshold: float = 60.0):
        self.min_area, self.max_regions, self.threshold = min_area, max_regions, threshold

    def __call__(self, image: np.ndarray, phrases: tuple[str, ...] = ()) -> list[Box]:
        # Foreground = far enough from the black background; 8-connected so a blurry object stays whole.
        fg = np.linalg.norm(image.astype(np.float32), axis=-1) > self.threshold
        comp, _ = ndimage.label(fg, structure=np.ones((3, 3), bool))
        found = []
        for idx, sl in enumerate(ndimage.find_objects(comp), start=1):
            area = int((comp[sl] == idx).sum())
            if area >= self.min_area:
                found.append((area, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
        found.sort(key=lambda a: -a[0])
        return [box for _, box in found[: self.max_regions]]


class GridProposer:
    def __init__(self, cells: int = 2):
        self.cells = cells

    def __call__(self, image: np.ndarray, phrases: tuple[str, ...] = ()) -> list[Box]:
        h, w = image.shape[:2]
        ys, xs = np.linspace(0, h, self.cells + 1).astype(int), np.linspace(0, w, self.cells + 1).astype(int)
        return [(int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])) for i in range(self.cells) for j in range(self.cells)]


class DetectorProposer:
    """Boxes from a zero-shot detector asked for the prompt's objects; the best-scoring `max_regions` above
    `threshold`, clipped to the image."""

    def __init__(self, directory: str, threshold: float = 0.1, max_regions: int = 6, device: str = "cpu"):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from ..io import InputError
        from ..models.strict import check_hf_dir

        check_hf_dir(Path(directory), f"reward.proposer detector:{directory}")  # strictly, as a model directory
        try:
            self.processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(directory, local_files_only=True).eval().to(device)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"reward.proposer detector:{directory}: cannot load a zero-shot detector ({str(e).splitlines()[0][:200]})") from None
        self.threshold, self.max_regions, self.device = threshold, max_regions, device
        self.grounding = "grounding" in type(self.model).__name__.lower()  # Grounding DINO: one text, labels split by '.'

    def __call__(self, image: np.ndarray, phrases: tuple[str, ...] = ()) -> list[Box]:
        import torch

        queries = list(phrases) or ["an object"]
        h, w = image.shape[:2]
        text = ". ".join(queries) + "." if self.grounding else [queries]
        inputs = self.processor(text=text, images=[image], return_tensors="pt", padding=True).to(self.device)
        with torch.no_grad():
            out = self.model(**inputs)
        post = self.processor.post_process_grounded_object_detection
        kwargs = {"input_ids": inputs["input_ids"], "text_threshold": self.threshold} if self.grounding else {}
        res = post(out, threshold=self.threshold, target_sizes=[(h, w)], **kwargs)[0]
        order = res["scores"].argsort(descending=True)[: self.max_regions]
        boxes = []
        for x0, y0, x1, y1 in res["boxes"][order].tolist():
            b = (max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))
            if b[2] > b[0] and b[3] > b[1]:
                boxes.append(b)
        return boxes


def load_proposer(spec: str) -> Callable[[np.ndarray, tuple[str, ...]], list[Box]]:
    """'module:function' -> that function as a proposer, checked to be callable."""
    import inspect

    if ":" not in spec:
        raise ValueError(f"proposer {spec!r}: expected components, grid, detector:DIR or 'module:function'")
    mod, fn = spec.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod), fn, None)
    except ImportError as e:
        raise ValueError(f"proposer {spec!r}: cannot import {mod} ({e})") from None
    if not callable(obj):
        raise ValueError(f"proposer {spec!r}: {fn} is not a callable in {mod}")
    if len(inspect.signature(obj).parameters) >= 2:
        return obj
    return lambda image, phrases=(): obj(image)
