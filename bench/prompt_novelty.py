"""Issue 18, a diagnostic: does SRUM learn more from prompts the generator never saw drawn?

The built-in was pretrained on renders of every training-split prompt (each colour prompt about 150 times), so
SRUM's default rollouts (the training stream) ask for scenes the generator has memorised. The held-out prompts
are the only ones it never saw. This splits the held-out set in two halves by category (A: even positions, B:
odd) and trains SRUM twice for the same budget, side by side (one thread each): on the training stream (the
default) and on half A's prompts (prompts only: no image, no label). Both are scored on half B, which neither saw.
Also the base generator's pass rate on training-split prompts, against held-out ones: how much it memorised.

    python bench/prompt_novelty.py [--budget-min 10] [--seed 0] [--k 8] [--out runs/novelty]

Prints JSON and writes docs/results/prompt_novelty.json. Not a row of the claim's table: half B is 150 prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from srum.evaluate import run_eval
from srum.models import load_model
from srum.rundir import latest_checkpoint
from srum.world import CATEGORIES, heldout_set
from srum.world.bench import training_spec

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def halves() -> tuple[list, list]:
    a, b = [], []
    for cat in CATEGORIES:
        specs = [s for s in heldout_set() if s.category == cat]
        a += specs[0::2]
        b += specs[1::2]
    return a, b


def train(out: Path, budget: float, seed: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "srum.cli", "train", "--config", "configs/srum-compworld.yaml", "--out", str(out),
           "--set", f"seed={seed}", "--set", f"time_budget_min={budget}", "--set", "eval.at_start=false",
           "--set", "eval.at_end=false"] + [x for s in extra for x in ("--set", s)]
    log = (out.parent / f"{out.name}.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def score(model_dir, specs, k: int, out: Path) -> dict:
    model = load_model(model_dir)
    r = run_eval(model, specs, k, out, 0, None, save_images=False, judge_model=load_model("builtin"))
    return {"overall": r["overall"], **r["categories"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-min", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/novelty"))
    args = ap.parse_args()
    a, b = halves()
    args.out.mkdir(parents=True, exist_ok=True)
    a_file = args.out / "heldout_half_a.json"
    a_file.write_text(json.dumps([{"prompt": s.prompt, "category": s.category} for s in a], indent=0) + "\n")
    runs = {"training_stream": [], "heldout_half_a": [f"rollout.prompts={a_file}"]}
    procs = {n: train(args.out / n, args.budget_min, args.seed, extra) for n, extra in runs.items()
             if latest_checkpoint(args.out / n) is None}
    for n, p in procs.items():
        if p.wait():
            raise SystemExit(f"{n}: srum train failed (see {args.out / n}.log)")
    torch.set_num_threads(2)
    train_specs = [training_spec(12345, i) for i in range(300)]
    res = {"what": __doc__.split("\n\n")[0], "budget_min": args.budget_min, "seed": args.seed, "k": args.k,
           "half_b_prompts": len(b),
           "base_on_training_prompts": score("builtin", train_specs, args.k, args.out / "eval_base_train"),
           "base_on_heldout": score("builtin", heldout_set(), args.k, args.out / "eval_base_heldout"),
           "base_on_half_b": score("builtin", b, args.k, args.out / "eval_base_b")}
    for n in runs:
        res[f"srum_{n}_on_half_b"] = score(latest_checkpoint(args.out / n) / "model", b, args.k, args.out / f"eval_{n}_b")
        res[f"srum_{n}_steps"] = len((args.out / n / "metrics.jsonl").read_text().splitlines())
    base = res["base_on_half_b"]["overall"]
    for n in runs:
        res[f"srum_{n}_error_reduction_on_half_b"] = round((res[f"srum_{n}_on_half_b"]["overall"] - base) / (1 - base), 4)
    (RESULTS / "prompt_novelty.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
