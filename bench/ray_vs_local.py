"""Streaming (Ray engine, max_staleness 1) versus the local engine at the same number of samples:
CompWorld-Bench before and after, and the gain of each. Writes docs/results/ray_vs_local.{json,md}.

Usage: python bench/ray_vs_local.py [--steps 200] [--out runs/ray_vs_local]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srum.actors.driver import RayEngine
from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("runs/ray_vs_local"))
    args = ap.parse_args()
    rows = {}
    for name, engine, sets in (("local", LocalEngine, ["engine=local"]), ("ray, max_staleness 1", RayEngine, ["engine=ray", "ray.max_staleness=1"])):
        cfg = load_config(TrainConfig, None, sets + [f"steps={args.steps}"])
        res = engine(cfg, args.out / name.split(",")[0]).run()
        rows[name] = {"initial": res["initial"]["overall"], "final": res["final"]["overall"],
                      "gain": round(res["final"]["overall"] - res["initial"]["overall"], 4),
                      "judge_initial": res["initial"]["judge_mean_global"], "judge_final": res["final"]["judge_mean_global"],
                      "samples": args.steps * cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt,
                      "train_seconds": res["train_seconds"]}
        print(name, json.dumps(rows[name]), flush=True)
    diff = abs(rows["local"]["gain"] - rows["ray, max_staleness 1"]["gain"])
    result = {"steps": args.steps, "rows": rows, "gain_difference_points": round(100 * diff, 2)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ray_vs_local.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Ray engine (streaming, max_staleness 1) vs local engine, same samples", "",
          f"`python bench/ray_vs_local.py --steps {args.steps}` (default config otherwise; held-out set, 300 prompts x 4 images)", "",
          "| engine | samples | before | after | gain | judge mean global before -> after | train s |", "|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        md.append(f"| {k} | {r['samples']} | {r['initial']:.4f} | {r['final']:.4f} | {r['gain']:+.4f} | "
                  f"{r['judge_initial']:.3f} -> {r['judge_final']:.3f} | {r['train_seconds']} |")
    md += ["", f"Difference of the gains: {result['gain_difference_points']} points (target: within 3)."]
    (OUT / "ray_vs_local.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
