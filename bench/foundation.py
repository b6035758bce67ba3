"""Issue 3 figures for a checkpoint (default: the shipped built-in), printed as JSON.

(a) understanding: balanced accuracy of "P(yes) > 0.5" against the oracle, on the model's own
    generations for the held-out set (300 prompts x K images; K = 8 by default, 2,400 images: the generator
    passes 1-3 % of its images, so 300 x 4 holds only 10-20 passing ones, each worth 5-9 points of the
    true-positive rate);
(b) generation: CompWorld-Bench per category and overall on those same images, and the gap to (a);
(c) pretraining wall time and peak memory (recorded when the checkpoint was trained), generation
    and understanding images/s on this machine (median of --runs timings);
plus the world checks: every render of 1,000 seeded prompts passes; one swapped colour fails.

    python bench/foundation.py [--model builtin|DIR] [--images-per-prompt 8] [--runs 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import time

import numpy as np
import torch

from srum.evaluate import bench_score, generate_images
from srum.models import SampleOptions, load_model, model_dir
from srum.world import COLORS, check, failure, heldout_set, parse, passes, render, sample_prompt


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Mean of the true-positive and true-negative rates; undefined (None) when a class is absent."""
    pos, neg = int(truth.sum()), int((~truth).sum())
    tpr = float((pred & truth).sum() / pos) if pos else None
    tnr = float((~pred & ~truth).sum() / neg) if neg else None
    bal = round((tpr + tnr) / 2, 4) if pos and neg else None
    return {"balanced_accuracy": bal, "true_positive_rate": tpr and round(tpr, 4),
            "true_negative_rate": tnr and round(tnr, 4), "positives": pos, "negatives": neg}


def world_checks(n: int = 1000) -> dict:
    rng = random.Random(2026)
    specs = [sample_prompt(rng) for _ in range(n)]
    images = [render(s, rng) for s in specs]
    swapped_fail = 0
    for s, img in zip(specs, images):
        c = s.objects[0][0]
        other = next(o for o in COLORS if o not in s.prompt)
        swapped_fail += not passes(img, parse(s.prompt.replace(c, other, 1)))
    return {"renders": n, "renders_passing": sum(passes(i, s) for s, i in zip(specs, images)),
            "one_colour_swapped_failing": swapped_fail}


def throughput(model, runs: int) -> dict:
    prompts = [s.prompt for s in heldout_set()[:64]]
    opts = SampleOptions()
    gen, und = [], []
    for r in range(runs):
        t = time.perf_counter()
        imgs = model.decode(model.sample_latents(prompts, torch.Generator().manual_seed(r), opts))
        gen.append(len(prompts) / (time.perf_counter() - t))
        batch = np.repeat(imgs, 4, axis=0)
        t = time.perf_counter()
        model.judge_yes_prob(batch, [model.question(p) for p in prompts for _ in range(4)])
        und.append(len(batch) / (time.perf_counter() - t))
    return {"generation_images_per_s": round(statistics.median(gen), 2),
            "generation_setting": f"batch 64, {opts.steps} Euler steps, CFG {opts.cfg_scale}",
            "understanding_images_per_s": round(statistics.median(und), 1),
            "understanding_setting": "batch 256, one yes/no forward", "runs": runs, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--images-per-prompt", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = load_model(args.model)
    specs = heldout_set()
    flat, images = generate_images(model, specs, args.images_per_prompt, args.seed, SampleOptions())
    verdicts = [check(img, s) for s, img in zip(flat, images)]
    truth = np.array([ok for ok, _ in verdicts])
    p_yes = model.judge_yes_prob(images, [model.question(s.prompt) for s in flat])
    understanding = balanced_accuracy(p_yes > 0.5, truth)
    # Which of the world's rules the judge misses: the oracle's reason for each failing image it accepted.
    accepted = collections.Counter(failure(s, found, ok) for s, (ok, found), p in zip(flat, verdicts, p_yes) if not ok and p > 0.5)
    understanding["false_positives_by_failure"] = dict(accepted.most_common())
    generation = bench_score([{"prompt": s.prompt, "category": s.category, "passed": t} for s, t in zip(flat, truth)])
    stats = model_dir(args.model) / "pretrain_stats.json"
    print(json.dumps({
        "model": args.model,
        "images": len(flat), "prompts": len(specs), "images_per_prompt": args.images_per_prompt,
        "understanding_on_own_generations": understanding,
        "generation_compworld_bench": generation,
        "gap_understanding_minus_generation": (None if understanding["balanced_accuracy"] is None
                                               else round(understanding["balanced_accuracy"] - generation["overall"], 4)),
        "pretraining": json.loads(stats.read_text()) if stats.exists() else None,
        "speed_2_cores": throughput(model, args.runs),
        "world": world_checks(),
    }, indent=2))


if __name__ == "__main__":
    main()
