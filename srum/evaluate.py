"""`srum eval` and `srum judge`: measure a model on CompWorld with the oracle, and let the model judge
its own (or any) images.

CompWorld-Bench score: per prompt, the fraction of its K images that pass; per category, the mean over
its prompts; overall, the unweighted mean of the category scores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .io import write_json, write_jsonl
from .models import SampleOptions
from .world import CATEGORIES, WORLD_VERSION, Spec, passes
from .world.files import read_manifest, read_png, write_png


def bench_score(rows: list[dict]) -> dict:
    """rows: {"prompt", "category", "passed"} per image -> overall and per-category scores."""
    per_prompt: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in rows:
        per_prompt[(r["category"], r["prompt"])].append(bool(r["passed"]))
    per_cat: dict[str, list[float]] = defaultdict(list)
    for (cat, _), v in per_prompt.items():
        per_cat[cat].append(sum(v) / len(v))
    cats = {c: round(float(np.mean(per_cat[c])), 4) for c in CATEGORIES if c in per_cat}
    return {"overall": round(float(np.mean(list(cats.values()))), 4) if cats else 0.0, "categories": cats}


def generate_images(model, specs: list[Spec], k: int, seed: int, opts: SampleOptions, batch: int = 64, desc="generate"):
    """K images per spec, in order (spec 0's K images first). Deterministic for (seed, batch)."""
    flat = [s for s in specs for _ in range(k)]
    images = []
    for b, i in enumerate(tqdm(range(0, len(flat), batch), desc=desc, unit="batch", mininterval=2)):
        g = torch.Generator().manual_seed(seed * 100_003 + b)
        images.append(model.decode(model.sample_latents([s.prompt for s in flat[i : i + batch]], g, opts)))
    return flat, (np.concatenate(images) if images else np.zeros((0, 32, 32, 3), np.uint8))


def run_eval(model, specs: list[Spec], k: int, out: Path, seed: int = 0, opts: SampleOptions | None = None,
             save_images: bool = True, judge_model=None) -> dict:
    """Generate K images per prompt, check each with the oracle, write images + manifest + report.
    With a judge model, the report also holds the judge's mean global score on the same images, so a
    judge score that rises while the oracle's pass rate falls (reward hacking) shows side by side."""
    out = Path(out)
    flat, images = generate_images(model, specs, k, seed, opts or SampleOptions())
    rows = []
    for i, (spec, img) in enumerate(zip(flat, images)):
        name = f"{i:05d}.png"
        if save_images:
            write_png(out / name, img)
        rows.append({"file": name, "prompt": spec.prompt, "category": spec.category, "passed": passes(img, spec)})
    report = {"world": WORLD_VERSION, "prompts": len(specs), "images_per_prompt": k, "seed": seed,
              **bench_score(rows)}
    if judge_model is not None and len(images):
        p = judge_model.judge_yes_prob(images, [judge_model.question(s.prompt) for s in flat])
        for row, q in zip(rows, p):
            row["judge_global"] = round(2 * float(q) - 1, 4)
        report["judge_mean_global"] = round(float(np.mean(2 * p - 1)), 4)
    write_jsonl(out / "manifest.jsonl", rows)
    write_json(out / "report.json", report)
    return report


def run_judge(model, manifest: Path, out: Path) -> list[dict]:
    """Per image in a manifest: the model's global P(yes) that the image shows its prompt."""
    rows = read_manifest(manifest)
    images = np.stack([read_png(f) for f, _, _ in rows])
    probs = model.judge_yes_prob(images, [model.question(s.prompt) for _, s, _ in rows])
    result = [{"file": row["file"], "prompt": s.prompt, "category": s.category, "yes_prob": round(float(p), 6),
               **({"passed": row["passed"]} if "passed" in row else {})}
              for (_, s, row), p in zip(rows, probs)]
    write_jsonl(out, result)
    return result
