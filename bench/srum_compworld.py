"""Issue 4 figures: CompWorld-Bench of the base model versus SRUM after a fixed training budget, and
the ablations, all from the same config, seeds and budget. Prints JSON; writes
docs/results/srum_compworld.{json,md} (merging with variants measured earlier).

    python bench/srum_compworld.py [--config configs/srum-compworld.yaml] [--budget-min 20]
                                   [--variants srum,global_only,...] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine, EVAL_SAMPLING
from srum.evaluate import run_eval
from srum.models import load_model
from srum.world import CATEGORIES, heldout_set

VARIANTS = {
    "srum": [],
    "global_only": ["reward.use_local=false"],
    "local_only": ["reward.use_global=false"],
    "lambda_0": ["learner.kl_coef=0"],
    "binarized": ["reward.binarize=true"],
    "signed_map": ["reward.map=signed"],
}
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


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
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.config)
    old = json.loads((RESULTS / "srum_compworld.json").read_text()) if (RESULTS / "srum_compworld.json").exists() else {}
    base_dir = args.out / "base"
    e = cfg.eval
    judge = load_model(cfg.model)
    base_report = run_eval(load_model(cfg.model), heldout_set()[: e.prompts], e.images_per_prompt, base_dir, e.seed,
                           EVAL_SAMPLING, save_images=False, judge_model=judge)
    base = base_report["overall"]
    rows = {"base": summarise(base_report)}
    for name in args.variants.split(","):
        vcfg = load_config(TrainConfig, args.config, VARIANTS[name] + ["eval.at_start=false", f"time_budget_min={args.budget_min}"])
        run = LocalEngine(vcfg, args.out / name, log=lambda *_: None).run()
        rows[name] = {**summarise(run["final"], base), "steps": run["steps_done"], "train_seconds": run["train_seconds"],
                      "samples": run["steps_done"] * vcfg.rollout.prompts_per_step * vcfg.rollout.samples_per_prompt,
                      "overrides": VARIANTS[name]}
        print(json.dumps({name: rows[name]}), flush=True)
    merged = {**old.get("rows", {}), **rows}
    out = {"config": str(args.config), "budget_min": args.budget_min, "eval_prompts": e.prompts,
           "images_per_prompt": e.images_per_prompt, "machine": "2 CPU cores", "rows": merged}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "srum_compworld.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "srum_compworld.md").write_text(markdown(out))
    print(json.dumps(out, indent=2))


def markdown(out: dict) -> str:
    cols = ["overall", *CATEGORIES, "gain_points", "error_reduction", "judge_mean_global", "steps", "samples"]
    lines = [f"# SRUM on CompWorld-Bench ({out['eval_prompts']} held-out prompts x {out['images_per_prompt']} images, "
             f"{out['budget_min']} min of training on {out['machine']})", "",
             "| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in out["rows"].items():
        lines.append(f"| {name} | " + " | ".join("" if row.get(c) is None else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n\nProduced by `python bench/srum_compworld.py`; `judge_mean_global` is the judge's mean global " \
        "score on the same images as the oracle's pass rate (the reward-hacking check).\n"


if __name__ == "__main__":
    main()
