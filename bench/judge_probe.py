"""Where a judge (a model's understanding side) stands, in more detail than bench/foundation.py's one figure:
for comparing pretraining stages and for seeing which of the world's rules a judge misses. Prints JSON.

    python bench/judge_probe.py --judge DIR [--generator builtin] [--images-per-prompt 4] [--seed 0]
        [--examples 800] [--edited 0.25] [--blobs 0.25] [--raw RUN/state/train_state.safetensors]

- on a generator's own held-out generations (300 prompts x K, bench/foundation.py's images for the same K and seed;
  cached under runs/judge_probe/ by the generator's weights, so every judge is scored on the same images): balanced
  accuracy of P(yes) > 0.5, and the area under the ROC curve (threshold-free, steadier with few positives);
- on fresh understanding examples of each kind pretraining makes (labelled by the world's rules): accuracy
  per (kind, label);
- when the judge has a grounding head (`und_grounding`): how often it reads an object's colour and its shape
  by the rules right, per shape class (per patch token that shows an object, or per object token). `--raw` scores a pretraining run's raw weights instead of
  its EMA, whose new head still carries much of its initialisation early in a stage.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
from pathlib import Path

import numpy as np
import torch

from srum.evaluate import balanced_accuracy, generate_images
from srum.io import load_tensors
from srum.models import SampleOptions, load_model, weights_sha256
from srum.models.mot_pretrain import raw_weights, region_objects, token_objects
from srum.world import heldout_set, passes, training_spec
from srum.world.examples import und_example
from srum.world.oracle import MAP_COLORS, MAP_SHAPES

CACHE = Path("runs/judge_probe")


def own_generations(generator: str, k: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(images, prompts, oracle verdicts) of the generator on the held-out set, k images per prompt."""
    f = CACHE / f"gens-{weights_sha256(generator)[:12]}{f'-x{k}' if k != 4 else ''}{f'-seed{seed}' if seed else ''}.npz"
    if not f.exists():
        flat, images = generate_images(load_model(generator), heldout_set(), k, seed, SampleOptions())
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(f, images=images, prompts=[s.prompt for s in flat],
                            truth=[passes(i, s) for s, i in zip(flat, images)])
    z = np.load(f)
    return z["images"], list(z["prompts"]), z["truth"]


def on_generations(judge, images, prompts, truth) -> dict:
    p = judge.judge_yes_prob(images, [judge.question(q) for q in prompts])
    pos, neg = p[truth], p[~truth]
    return {**balanced_accuracy(p > 0.5, truth), "roc_area": round(float((pos[:, None] > neg[None, :]).mean()), 4)}


def examples(n: int, resized: float, edited: float, blobs: float = 0.0) -> list[tuple]:
    """n fresh understanding examples (a seed pretraining never uses)."""
    return [und_example(random.Random(f"probe/{i}"), training_spec(777, i), resized, edited, blobs=blobs) for i in range(n)]


def by_kind(judge, ex: list[tuple]) -> dict:
    imgs = np.stack([e[0] for e in ex])
    said = judge.judge_yes_prob(imgs, [judge.question(e[1]) for e in ex]) > 0.5
    right = collections.defaultdict(list)
    for (_, _, label, kind), yes in zip(ex, said):
        right[f"{kind}, {'passes' if label else 'fails'}"].append(bool(yes) == bool(label))
    return {k: f"{np.mean(v):.3f} of {len(v)}" for k, v in sorted(right.items())}


def grounding(judge, ex: list[tuple]) -> dict:
    imgs = np.stack([e[0] for e in ex])
    if judge.cfg.und_regions:  # the head reads the object tokens
        targets = np.stack([region_objects(i, judge.cfg.und_regions) for i in imgs])
    else:
        targets = np.stack([token_objects(i, judge.cfg.patch) for i in imgs])
    with torch.no_grad():
        *_, logits = judge.understand(imgs, [judge.question(e[1]) for e in ex], grounding=True)
    colour = logits[..., : len(MAP_COLORS)].argmax(-1).cpu().numpy()
    shape = logits[..., len(MAP_COLORS) :].argmax(-1).cpu().numpy()
    obj = targets[..., 0] > 0
    out = {"object_tokens": int(obj.sum()), "colour": round(float((colour == targets[..., 0])[obj].mean()), 3),
           "shape": round(float((shape == targets[..., 1])[obj].mean()), 3)}
    for k, name in enumerate(MAP_SHAPES[1:], 1):
        sel = targets[..., 1] == k
        out[name] = f"{(shape == k)[sel].mean():.3f} of {sel.sum()}" if sel.any() else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judge", required=True, help="a model directory (or builtin)")
    ap.add_argument("--generator", default="builtin", help="whose held-out generations to judge")
    ap.add_argument("--images-per-prompt", type=int, default=4, help="of the generator's held-out generations")
    ap.add_argument("--seed", type=int, default=0, help="of the generator's held-out generations")
    ap.add_argument("--examples", type=int, default=800)
    ap.add_argument("--resized", type=float, default=0.3, help="share of resized objects among the examples")
    ap.add_argument("--edited", type=float, default=0.0, help="share of edited scenes among the examples (und_edited)")
    ap.add_argument("--blobs", type=float, default=0.0, help="share of blob scenes among the examples (und_blobs)")
    ap.add_argument("--raw", type=Path, help="a pretraining run's train_state.safetensors: score its raw weights")
    args = ap.parse_args()
    judge = load_model(args.judge)
    if args.raw:
        judge.net.load_state_dict(raw_weights(load_tensors(args.raw)))
    ex = examples(args.examples, args.resized, args.edited, args.blobs)
    out = {"judge": args.judge, "raw": str(args.raw) if args.raw else None, "generator": args.generator,
           "own_generations": on_generations(judge, *own_generations(args.generator, args.images_per_prompt, args.seed)),
           "by_kind": by_kind(judge, ex),
           "grounding": grounding(judge, ex) if judge.cfg.und_grounding else None}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
