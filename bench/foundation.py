"""The figures of a checkpoint (default: the built-in), printed as JSON (and written with --out): its judge against
the oracle on its own generations of an evaluation split (the whole-image answer, and the fine-grained verdict of each
judge mode: `self`, the model's answers on the image and its regions; `grounded`, with relations read by geometry off
its regions), CompWorld-Bench on them, speeds, pretraining cost, the judge on clean renders with their relation
reversed, the world and tokenizer checks.

    python bench/foundation.py [--split test|validation|heldout] [--model builtin|DIR] [--images-per-prompt 8] [--runs 3]
        [--seed 0] [--out F.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from srum.evaluate import balanced_accuracy, bench_score, generate_images
from srum.models import load_model, model_dir, weights_sha256
from srum.records import Rollout
from srum.rewards.judge import SelfJudge, verdict_score
from srum.rewards.proposals import ComponentProposer
from srum.world import COLORS, check, eval_set, failure, parse, passes, render, sample_prompt
from srum.world.corrupt import reverse_relation

from common import timed


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
    """Images/s at batch 64 (median of `runs`); for an autoregressive model also without the KV cache, the ratio
    taken within each run (on a noisy machine a ratio of medians is not)."""
    prompts = [s.prompt for s in eval_set("test")[:64]]
    cached = hasattr(model, "encode")  # the janus backend: image tokens, a KV cache
    gen, nocache, ratio, und = [], [], [], []
    for r in range(runs):
        t = time.perf_counter()
        imgs, _ = model.sample(prompts, r)
        gen.append(len(prompts) / (time.perf_counter() - t))
        if cached:
            nocache.append(len(prompts) / timed(lambda: model.sample(prompts, r, kv_cache=False)))
            ratio.append(gen[-1] / nocache[-1])
        batch = np.repeat(imgs, 4, axis=0)
        und.append(len(batch) / timed(lambda: model.judge_yes_prob(batch, [model.question(p) for p in prompts for _ in range(4)])))
    out = {"generation_images_per_s": round(statistics.median(gen), 2),
           "generation_setting": f"batch 64, {model.default_sampling}",
           "understanding_images_per_s": round(statistics.median(und), 1),
           "understanding_setting": "256 images, one yes/no forward each", "runs": runs, "threads": torch.get_num_threads()}
    if cached:
        out |= {"generation_images_per_s_without_kv_cache": round(statistics.median(nocache), 2),
                "kv_cache_speedup_per_run": [round(x, 2) for x in ratio], "kv_cache_speedup_median": round(statistics.median(ratio), 2)}
    return out


def tokenizer_check(model, n: int = 1000) -> dict | None:
    """Renders of n seeded prompts, encoded and decoded by the model's VQ: the share that still pass."""
    if not hasattr(model, "encode"):
        return None
    rng = random.Random(2027)
    specs = [sample_prompt(rng) for _ in range(n)]
    images = np.stack([render(s, rng) for s in specs])
    back = np.concatenate([model.decode(model.encode(images[i : i + 100])) for i in range(0, n, 100)])
    ok = [passes(b, s) for b, s in zip(back, specs)]
    return {"renders": n, "passing_after_round_trip": int(sum(ok)), "pass_rate": round(float(np.mean(ok)), 4)}


def relations_on_renders(model, specs) -> dict:
    """Per related category: the share of renders the judge says yes to under their prompt and under it reversed
    (false on every render), how often the prompt's P(yes) beats the reversed one's. (The description check of
    2026-12-05, `description_reads_relation`: at tag archive/experiments-2026-12, docs/results/foundation.md.)"""
    rng, out = random.Random(5), {}
    for cat in ("spatial", "complex"):
        of = [s for s in specs if s.category == cat]
        images = np.stack([render(s, rng) for s in of])
        p = model.judge_yes_prob(images, [model.question(s.prompt) for s in of])
        q = model.judge_yes_prob(images, [model.question(reverse_relation(s).prompt) for s in of])
        out[cat] = {"renders": len(of), "yes_to_prompt": round(float((p > 0.5).mean()), 4),
                    "yes_to_reversed": round(float((q > 0.5).mean()), 4), "prompt_beats_reversed": round(float((p > q).mean()), 4)}
    return out


def ranking(p_yes: np.ndarray, truth: np.ndarray) -> dict:
    """How well P(yes) orders passing above failing images: the ROC AUC, and the balanced accuracy of the best cut
    chosen on these very images (an upper bound, not the judge's figure: its verdict is P(yes) > 0.5)."""
    pos, neg = p_yes[truth], p_yes[~truth]
    if not len(pos) or not len(neg):
        return {}
    auc = float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
    best = max(balanced_accuracy(p_yes > t, truth)["balanced_accuracy"] for t in np.unique(p_yes)[::max(len(p_yes) // 400, 1)])
    return {"roc_auc": round(auc, 4), "best_cut_balanced_accuracy": best}


def judged(model, flat, images, truth, verdicts) -> tuple[np.ndarray, dict]:
    """The judge as SRUM runs it: P(yes) of the global question, and the figures of each mode's fine-grained verdict."""
    judge = SelfJudge(model, ComponentProposer())
    js = []
    for i in range(0, len(flat), 64):
        js += judge.judge([Rollout(str(i + j), s.prompt, s.category, img, None)
                           for j, (s, img) in enumerate(zip(flat[i : i + 64], images[i : i + 64]))])
    p_yes = np.array([(j.global_score + 1) / 2 for j in js])
    fine = {}
    for mode, grounded in (("self", False), ("grounded", True)):
        score = np.array([verdict_score(j.global_score, j.regions, j.relation_score if grounded else None) for j in js])
        fine[mode] = balanced_accuracy(score > 0, truth) | by_failure(flat, verdicts, score > 0) | ranking(score, truth)
    return p_yes, fine


def by_failure(flat, verdicts, accepted: np.ndarray) -> dict:
    """Which of the world's rules a verdict misses: the oracle's reason for each failing image, and for those it accepted."""
    reasons = [(failure(s, found, ok), yes) for s, (ok, found), yes in zip(flat, verdicts, accepted) if not ok]
    return {"false_positives_by_failure": dict(collections.Counter(why for why, yes in reasons if yes).most_common()),
            "failures_by_failure": dict(collections.Counter(why for why, _ in reasons).most_common())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test", choices=["test", "validation", "heldout"])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--images-per-prompt", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    specs = eval_set(args.split)
    t0 = time.perf_counter()
    flat, images = generate_images(model, specs, args.images_per_prompt, args.seed)
    generate_s = time.perf_counter() - t0
    verdicts = [check(img, s) for s, img in zip(flat, images)]
    truth = np.array([ok for ok, _ in verdicts])
    p_yes, fine_grained = judged(model, flat, images, truth, verdicts)
    understanding = balanced_accuracy(p_yes > 0.5, truth) | by_failure(flat, verdicts, p_yes > 0.5) | ranking(p_yes, truth)
    generation = bench_score([{"prompt": s.prompt, "category": s.category, "passed": t} for s, t in zip(flat, truth)])
    stats = model_dir(args.model) / "pretrain_stats.json"
    acc = understanding["balanced_accuracy"]
    result = {"command": "python bench/foundation.py " + " ".join(sys.argv[1:]), "model": args.model,
              "weights_sha256": weights_sha256(args.model)[:12], "split": args.split, "seed": args.seed, "images": len(flat), "prompts": len(specs),
              "images_per_prompt": args.images_per_prompt, "understanding_on_own_generations": understanding,
              "fine_grained_verdict_on_own_generations": fine_grained, "relations_on_renders": relations_on_renders(model, specs),
              "generation_compworld_bench": generation,
              "gap_understanding_minus_generation": None if acc is None else round(acc - generation["overall"], 4),
              "pretraining": json.loads(stats.read_text()) if stats.exists() else None, "generate_seconds": round(generate_s, 1),
              "speed_2_cores": throughput(model, args.runs), "tokenizer": tokenizer_check(model), "world": world_checks()}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
