"""Issue 4 figures: CompWorld-Bench of the base model versus SRUM after a fixed training budget, and
the ablations, all from the same config, seeds and budget. Prints JSON; writes
docs/results/srum_compworld.{json,md} (merging with variants measured earlier).

    python bench/srum_compworld.py [--config configs/srum-compworld.yaml] [--budget-min 20]
                                   [--variants srum,global_only,...] [--out runs/bench]
                                   [--categories single,shape --images-per-prompt 16]

--categories restricts training prompts (training stream, never held-out prompts) and evaluation (the
held-out prompts of those categories) to some categories, where a weak generator has something to
improve; its results go to docs/results/srum_compworld_<categories>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine, EVAL_SAMPLING
from srum.evaluate import run_eval
from srum.models import load_model, weights_sha256
from srum.io import write_jsonl
from srum.stages import latest_checkpoint
from srum.world import CATEGORIES, heldout_set, training_spec

VARIANTS = {
    "srum": [],
    "global_only": ["reward.use_local=false"],
    "local_only": ["reward.use_global=false"],
    "lambda_0": ["learner.kl_coef=0"],
    "binarized": ["reward.binarize=true"],
    "signed_map": ["reward.map=signed"],
    "centred": ["reward.centre=true"],  # paper map minus its batch mean: signed advantages
    "rollout_20_steps": ["rollout.sampling.steps=20"],  # roll out with the evaluation's sampler
}
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
HAND_WRITTEN = "\n## What each row shows"  # written by hand under the table; kept while the rows are the same weights'


def summarise(report: dict, base: float | None = None) -> dict:
    row = {"overall": report["overall"], **report["categories"], "judge_mean_global": report.get("judge_mean_global")}
    if base is not None:
        row["gain_points"] = round(100 * (report["overall"] - base), 2)
        row["error_reduction"] = round((report["overall"] - base) / (1 - base), 4) if base < 1 else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("configs/srum-compworld.yaml"))
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--categories", help="comma-separated: train and evaluate on these categories only")
    ap.add_argument("--images-per-prompt", type=int, help="overrides eval.images_per_prompt")
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.config)
    e = cfg.eval
    k = args.images_per_prompt or e.images_per_prompt
    specs, extra, stem = heldout_set()[: e.prompts], [], "srum_compworld"
    if args.categories:
        cats = args.categories.split(",")
        if unknown := sorted(set(cats) - set(CATEGORIES)):
            ap.error(f"--categories: unknown {unknown}; known: {', '.join(CATEGORIES)}")
        specs = [s for s in heldout_set() if s.category in cats]
        extra = [f"rollout.prompts={category_prompts(cats, cfg.seed, args.out / 'train_prompts.jsonl')}", "eval.at_end=false"]
        stem += "_" + "_".join(cats)
    old = json.loads((RESULTS / f"{stem}.json").read_text()) if (RESULTS / f"{stem}.json").exists() else {}
    weights = model_sha256(cfg.model)
    if old.get("model_sha256") != weights:  # rows of another checkpoint: never one table with this base
        old = {}
    judge = load_model(cfg.model)
    base_report = run_eval(load_model(cfg.model), specs, k, args.out / "base", e.seed,
                           EVAL_SAMPLING, save_images=False, judge_model=judge)
    base = base_report["overall"]
    rows = {"base": summarise(base_report)}
    for name in args.variants.split(","):
        vcfg = load_config(TrainConfig, args.config, VARIANTS[name] + extra + ["eval.at_start=false", f"time_budget_min={args.budget_min}"])
        run = LocalEngine(vcfg, args.out / name, log=lambda *_: None).run()
        if args.categories:  # the engine's own evaluation covers all categories: evaluate the final policy here
            run["final"] = run_eval(load_model(latest_checkpoint(args.out / name) / "model"), specs, k, args.out / name / "eval_categories",
                                    e.seed, EVAL_SAMPLING, save_images=False, judge_model=judge)
        rows[name] = {**summarise(run["final"], base), "steps": run["steps_done"], "train_seconds": run["train_seconds"],
                      "samples": run["steps_done"] * vcfg.rollout.prompts_per_step * vcfg.rollout.samples_per_prompt,
                      "overrides": VARIANTS[name]}
        print(json.dumps({name: rows[name]}), flush=True)
    merged = {**old.get("rows", {}), **rows}
    out = {"command": "python bench/srum_compworld.py " + " ".join(sys.argv[1:]), "config": str(args.config),
           "model": cfg.model, "model_sha256": weights, "budget_min": args.budget_min, "eval_prompts": len(specs), "categories": args.categories,
           "images_per_prompt": k, "machine": "2 CPU cores", "rows": merged}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = RESULTS / f"{stem}.md"
    notes = md.read_text().partition(HAND_WRITTEN)[2] if old and md.exists() else ""  # a reader's notes on these rows
    md.write_text(markdown(out) + (HAND_WRITTEN + notes if notes else ""))
    print(json.dumps(out, indent=2))


def model_sha256(model: str) -> str:
    """Which weights the rows were measured from (the first 12 hex digits of model.safetensors' SHA-256)."""
    return weights_sha256(model)[:12]


def category_prompts(cats: list[str], seed: int, path: Path, n: int = 3000) -> Path:
    """The first n training-stream prompts of these categories (never a held-out one), as a prompt file."""
    held = {s.prompt for s in heldout_set()}
    rows, i = [], 0
    while len(rows) < n:
        s = training_spec(seed, i)
        i += 1
        if s.category in cats and s.prompt not in held:
            rows.append({"prompt": s.prompt, "category": s.category})
    write_jsonl(path, rows)
    return path


def markdown(out: dict) -> str:
    cols = ["overall", *[c for c in CATEGORIES if any(c in r for r in out["rows"].values())], "gain_points", "error_reduction", "judge_mean_global", "steps", "samples"]
    scope = f", categories {out['categories']} only" if out.get("categories") else ""
    lines = [f"# SRUM on CompWorld-Bench ({out['eval_prompts']} held-out prompts x {out['images_per_prompt']} images{scope}, "
             f"{out['budget_min']} min of training on {out['machine']})", "",
             "| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in out["rows"].items():
        lines.append(f"| {name} | " + " | ".join("" if row.get(c) is None else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + f"\n\nProduced by `{out.get('command', 'python bench/srum_compworld.py')}`; `judge_mean_global` is the judge's mean global " \
        "score on the same images as the oracle's pass rate (the reward-hacking check).\n"


if __name__ == "__main__":
    main()
