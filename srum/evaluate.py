"""`srum eval` and `srum judge`: measure a model on CompWorld with the oracle, and let the model judge
its own (or any) images.

CompWorld-Bench score: per prompt, the fraction of its K images that pass; per category, the mean over
its prompts; overall, the unweighted mean of the category scores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .io import write_json, write_jsonl
from .models import SampleOptions
from .world import CANVAS, CATEGORIES, WORLD_VERSION, passes
from .world.canvas import to_canvas
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


def generate_images(model, specs: list, k: int, seed: int, opts: SampleOptions | None = None, batch: int = 64,
                    desc="generate", canvas: bool = True):
    """K images per spec (or prompt item), in order (spec 0's K images first); with `canvas`, at CompWorld's
    32 x 32 (`to_canvas`). Deterministic for (seed, batch)."""
    flat = [s for s in specs for _ in range(k)]
    images = []
    for b, i in enumerate(tqdm(range(0, len(flat), batch), desc=desc, unit="batch", mininterval=2)):
        imgs, _ = model.sample([s.prompt for s in flat[i : i + batch]], seed * 100_003 + b, opts)
        images.append(to_canvas(imgs) if canvas else imgs)
    return flat, (np.concatenate(images) if images else np.zeros((0, CANVAS, CANVAS, 3), np.uint8))


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Mean of the true-positive and true-negative rates; undefined (None) when a class is absent."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    tpr = float((pred & truth).sum() / pos) if pos else None
    tnr = float((~pred & ~truth).sum() / neg) if neg else None
    bal = round((tpr + tnr) / 2, 4) if pos and neg else None
    return {"balanced_accuracy": bal, "true_positive_rate": tpr and round(tpr, 4),
            "true_negative_rate": tnr and round(tnr, 4), "positives": pos, "negatives": neg}


def run_eval(model, specs: list, k: int, out: Path, seed: int = 0, opts: SampleOptions | None = None,
             save_images: bool = True, judge_model=None) -> dict:
    """Generate K images per prompt, check each with the oracle, write images + manifest + report.
    `specs`: CompWorld specs or prompt items (srum.rollout.sources); a prompt outside CompWorld has no oracle
    and is scored by the judge alone. With a judge model, the report also holds the judge's mean global score
    on the same images and its balanced accuracy against the oracle, so a judge score that rises while the
    oracle's pass rate falls (reward hacking), or a judge the policy learned to fool, shows side by side."""
    from .rollout.sources import PromptItem, from_spec

    items = [s if isinstance(s, PromptItem) else from_spec(s) for s in specs]
    oracle = all(it.spec is not None for it in items)
    out = Path(out)
    flat, images = generate_images(model, items, k, seed, opts, canvas=oracle)
    rows = []
    for i, (it, img) in enumerate(zip(flat, images)):
        name = f"{i:05d}.png"
        if save_images:
            write_png(out / name, img)
        rows.append({"file": name, "prompt": it.prompt, "category": it.category,
                     "passed": passes(img, it.spec) if oracle else None})
    report = {"world": WORLD_VERSION, "prompts": len(items), "images_per_prompt": k, "seed": seed}
    if oracle:
        report |= bench_score(rows)
    else:
        report["oracle"] = "none: these prompts are not CompWorld's, so no program checks them; they are scored by the judge alone"
        judge_model = judge_model or model
    if judge_model is not None and len(images):
        p = judge_model.judge_yes_prob(images, [judge_model.question(it.prompt) for it in flat])
        for row, q in zip(rows, p):
            row["judge_global"] = round(2 * float(q) - 1, 4)
        report["judge_mean_global"] = round(float(np.mean(2 * p - 1)), 4)
        if oracle:
            report["judge_on_these_images"] = balanced_accuracy(p > 0.5, np.array([r["passed"] for r in rows]))
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
