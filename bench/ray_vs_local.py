"""Streaming (Ray engine, max_staleness 1) versus the local engine at the same number of samples:
CompWorld-Bench before and after, the gain of each and its samples/s. Writes docs/results/ray_vs_local.{json,md}
(the figures of the earlier mixture-of-transformers built-in are in ray_vs_local_mot.{json,md}).

Usage: python bench/ray_vs_local.py [--steps 200] [--out runs/ray_vs_local]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srum.actors.driver import RayEngine
from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.models import weights_sha256

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
        rows[name]["samples_per_s"] = round(rows[name]["samples"] / res["train_seconds"], 2)
        print(name, json.dumps(rows[name]), flush=True)
    diff = abs(rows["local"]["gain"] - rows["ray, max_staleness 1"]["gain"])
    result = {"steps": args.steps, "model": cfg.model, "model_sha256": weights_sha256(cfg.model)[:12], "rows": rows, "gain_difference_points": round(100 * diff, 2)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ray_vs_local.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Ray engine (streaming, max_staleness 1) vs local engine, same samples", "",
          f"`python bench/ray_vs_local.py --steps {args.steps}` (the default `srum train` otherwise: model {cfg.model}, weights "
          f"{result['model_sha256']}; held-out set, {cfg.eval.prompts} prompts x {cfg.eval.images_per_prompt} images)", "",
          "| engine | samples | before | after | gain | judge mean global before -> after | train s | samples/s |",
          "|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        md.append(f"| {k} | {r['samples']} | {r['initial']:.4f} | {r['final']:.4f} | {r['gain']:+.4f} | "
                  f"{r['judge_initial']:.3f} -> {r['judge_final']:.3f} | {r['train_seconds']} | {r['samples_per_s']} |")
    md += ["", f"Difference of the gains: {result['gain_difference_points']} points (target: within 3)."]
    (OUT / "ray_vs_local.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
