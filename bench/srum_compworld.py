"""Issue 37: the claim. SRUM on the built-in against its base and matched controls on a split of held-out scenes;
writes docs/results/srum_compworld_SPLIT.{json,md}.

    python bench/srum_compworld.py --split validation|test [--updates 800] [--rows grounded,self,...] [--seeds 0,1,2]
        [--images-per-prompt 8] [--config configs/srum-compworld.yaml] [--out runs/bench]

Validation is for choices, test for claims (run once per shipped default). A table holds one set of weights, one split
and one budget in updates (x 64 samples; minutes differ 3x between machines, so they are reported, not fixed). Each
row is the default with one change (ROWS) and runs every seed but ONE_SEED rows; run directories keep their results,
so a bench resumes and rows join later. Every evaluation is the split's prompts x K images at one seed (rows are
paired): the oracle's score and the frozen judge's view of the same images. Error reduction = (after - before) /
(1 - before); `vs_shuffled`: a row's gain over its matched control in standard errors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.evaluate import run_eval
from srum.models import SampleOptions, load_model, weights_sha256
from srum.world import CATEGORIES, eval_set

from common import RESULTS, md_table, previous, table_lock, write  # bench/ is on sys.path when a script in it runs

ROWS = {
    # the shipped default: the paper's map scaled by the fine-grained verdict, centred per prompt, judge mode grounded
    "grounded": [],
    "self": ["reward.judge_mode=self"],  # the model's own judgement alone (no rule reads the image)
    # the matched controls: each sample weighed by another sample's judgement of the same prompt (same magnitudes,
    # no information about the sample), in each mode
    "shuffled_grounded": ["reward.shuffle=true"],
    "shuffled_self": ["reward.shuffle=true", "reward.judge_mode=self"],
    "uniform": ["reward.map=uniform", "reward.centre=none"],  # self-imitation alone at the default's lambda
    # the paper, literally: its map (0.5, regions, times the whole-image answer), uncentred, the model's own judgement
    "paper": ["reward.centre=none", "reward.strict_global=false", "reward.judge_mode=self"],
    "oracle": ["reward.judge.engine=oracle"],  # the never-wrong judge in the judge's place: an upper bound
}
ONE_SEED = ("oracle",)
MATCHED = {"grounded": "shuffled_grounded", "self": "shuffled_self"}


def evaluate_base(cfg: TrainConfig, k: int, out: Path) -> dict:
    f = out / "base" / "report.json"
    if f.exists():
        return json.loads(f.read_text())
    model = load_model(cfg.model)
    return run_eval(model, eval_set(cfg.eval.split, cfg.eval.prompts), k, out / "base", cfg.eval.seed,
                    SampleOptions.of(cfg.eval.sampling), save_images=False, judge_model=model)


def settings(split: str, updates: int, k: int, seed: int = 0) -> list[str]:
    """What every row sets: the scene split's training stream, a budget in updates, the evaluation at the end."""
    return ["rollout.scenes=true", f"eval.split={split}", f"steps={updates}", "time_budget_min=0", f"seed={seed}",
            "eval.at_start=false", f"eval.images_per_prompt={k}"]


def run_row(config: Path, name: str, seed: int, split: str, updates: int, k: int, out: Path) -> dict:
    run = out / f"{name}_seed{seed}"
    if (run / "results.json").exists():
        return json.loads((run / "results.json").read_text())
    cfg = load_config(TrainConfig, config, ROWS[name] + settings(split, updates, k, seed))
    return LocalEngine(cfg, run, log=lambda *_: None).run()


def summary(report: dict) -> dict:
    judge = report.get("judge_on_these_images", {})
    return {"overall": report["overall"], **report["categories"], "judge_mean_global": report.get("judge_mean_global"),
            "judge_balanced_accuracy": judge.get("balanced_accuracy"), "judge_tpr": judge.get("true_positive_rate"),
            "judge_tnr": judge.get("true_negative_rate")}


def put_mean(out: dict, key: str, values: list[float]) -> None:
    """out[key]: the mean of `values`; out[key_se]: its standard error, where there are several."""
    out[key] = round(statistics.fmean(values), 4)
    if len(values) > 1:
        out[f"{key}_se"] = round(statistics.stdev(values) / len(values) ** 0.5, 4)


def run_figures(r: dict, per_step: int) -> dict:
    """One run's figures (its results.json) as a table row holds them: the budget in updates, samples and seconds."""
    return summary(r["final"]) | {"updates": r["steps_done"], "samples": r["steps_done"] * per_step,
                                  "train_seconds": r["train_seconds"], "threads": r.get("torch_threads")}


def aggregate(by_seed: dict[str, dict], base: float) -> dict:
    """Mean (and standard error over seeds) of every figure of a row's runs; the runs' own figures are kept."""
    rows = list(by_seed.values())
    out = {"seeds": len(rows)}
    for key in rows[0]:
        if vals := [row[key] for row in rows if row.get(key) is not None]:
            put_mean(out, key, vals)
    put_mean(out, "error_reduction", [(row["overall"] - base) / (1 - base) for row in rows])
    out["gain_points"] = round(100 * (out["overall"] - base), 2)
    if out.get("judge_balanced_accuracy") is not None:
        out["gap"] = round(out["judge_balanced_accuracy"] - out["overall"], 4)
    return out | {"runs": by_seed}


def against_controls(rows: dict) -> None:
    """Each judged row's gain over its matched shuffled control, in standard errors of the difference."""
    for name, control in MATCHED.items():
        a, b = rows.get(name), rows.get(control)
        if a and b and a.get("overall_se") and b.get("overall_se"):
            a["vs_shuffled"] = round((a["overall"] - b["overall"]) / (a["overall_se"] ** 2 + b["overall_se"] ** 2) ** 0.5, 1)


def markdown(res: dict) -> str:
    cols = ["overall", *CATEGORIES, "error_reduction", "vs_shuffled", "judge_mean_global", "judge_balanced_accuracy", "gap",
            "updates", "samples", "train_seconds"]

    def cell(row, c):
        v, se = row.get(c), row.get(f"{c}_se")
        return "" if v is None else f"{v} ± {se}" if se is not None else str(v)

    rows = [("base", 1, res["base"])] + [(n, row["seeds"], row) for n, row in res["rows"].items()]
    return "\n".join([
        (f"# SRUM on CompWorld-Bench, **{res['split']} split** (held-out scenes): the built-in Janus, {res['eval_prompts']} "
         f"prompts x {res['images_per_prompt']} images, {res['updates']} updates x 64 samples"), "",
        (f"Each row was produced by its command (below the table; weights {res['model_sha256']}; {res['machine']}). Mean over "
         "seeds, ± one standard error. The judge mode is in the row's name (`grounded`: the default, the model's answers "
         "plus relations read by geometry off its regions; `self`: its answers alone). `judge_*`: the frozen judge (the "
         "initial model's understanding) on the same images: its mean global score and its balanced accuracy against the "
         "oracle (reward hacking would raise the first and lower the second). `gap`: judge accuracy minus score."), "",
        *md_table(["row", "seeds", *cols], [(n, k, *(cell(row, c) for c in cols)) for n, k, row in rows]), "",
        "Rows: " + "; ".join(f"`{n}`: {' '.join(ROWS[n]) or 'the default configuration'}" for n in res["rows"]), "",
        "Commands (a row's runs are kept, so rerunning its command rebuilds it without training):", "",
        *(f"- `{n}`: " + "; ".join(f"`{c}`" for c in row["commands"]) for n, row in res["rows"].items()), ""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=["validation", "test"], required=True)
    ap.add_argument("--updates", type=int, default=800)
    ap.add_argument("--config", type=Path, default=Path("configs/srum-compworld.yaml"))
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--images-per-prompt", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    k, split = args.images_per_prompt, args.split
    cfg = load_config(TrainConfig, args.config, settings(split, args.updates, k))
    sha = weights_sha256(cfg.model)[:12]
    out = args.out / sha / f"{split}_{args.updates}u"  # runs of other weights, splits or budgets are never mixed
    res_file = RESULTS / f"srum_compworld_{split}.json"
    identity = {"model_sha256": sha, "split": split, "updates": args.updates}
    previous(res_file, **identity)  # another table: refused before training
    base_report = evaluate_base(cfg, k, out)
    base, base_row = base_report["overall"], summary(base_report)
    base_row["gap"] = round(base_row["judge_balanced_accuracy"] - base, 4) if base_row.get("judge_balanced_accuracy") else None
    command = f"OMP_NUM_THREADS={torch.get_num_threads()} python bench/srum_compworld.py " + " ".join(sys.argv[1:])
    for name in filter(None, args.rows.split(",")):  # --rows "": the base evaluation only
        seeds = [int(s) for s in args.seeds.split(",")][: 1 if name in ONE_SEED else None]
        t = time.time()
        per_step = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt  # no row changes the batch
        new_runs = {str(s): run_figures(run_row(args.config, name, s, split, args.updates, k, out), per_step) for s in seeds}
        with table_lock(res_file):  # two benches run side by side: read the table after training, not before
            old = previous(res_file, **identity)
            rows, old_row = old.get("rows", {}), old.get("rows", {}).get(name, {})
            by_seed = dict(sorted((old_row.get("runs", {}) | new_runs).items()))
            rows[name] = aggregate(by_seed, base) | {"commands": [c for c in old_row.get("commands", []) if c != command] + [command]}
            against_controls(rows)
            print(json.dumps({name: rows[name], "wall_s": round(time.time() - t)}), flush=True)
            res = identity | {"command": command, "config": str(args.config), "model": cfg.model, "eval_prompts": len(eval_set(split, cfg.eval.prompts)),
                              "images_per_prompt": k, "eval_seed": cfg.eval.seed,
                              "machine": f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} thread(s) a run", "base": base_row, "rows": rows}
            write(res_file.with_suffix(""), res, markdown(res), notes="\n## What the rows show")


if __name__ == "__main__":
    main()
