"""Issue 18: SRUM on the built-in against its base and controls, on CompWorld-Bench; writes docs/results/TABLE.{json,md}.

    python bench/srum_compworld.py [--config configs/srum-compworld.yaml] [--budget-min 20] [--rows srum,uniform,...]
        [--seeds 0,1,2] [--one-seed 0] [--images-per-prompt 8] [--out runs/bench] [--table srum_compworld]

A table holds one set of weights at one budget. Each row is the configuration with one change (ROWS); SEEDED rows run
--seeds, the others --one-seed; run directories keep their results, so a bench resumes and rows join later. Each
evaluation (300 held-out prompts x K images, one seed: rows are paired) gives the score and the frozen judge's view of
the same images. Error reduction = (after - before) / (1 - before); gap = judge accuracy - score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.evaluate import run_eval
from srum.models import SampleOptions, load_model, weights_sha256
from srum.world import CATEGORIES, heldout_set

from common import RESULTS, md_table, previous, table_lock, write  # bench/ is on sys.path when a script in it runs

# Rows keep the configuration they ran, by name, when the default changes (docs/results/srum_compworld.md, "How it was
# run"): until 2026-12-05 evening lambda was 0.1 (LAMBDA_01); before, the map's global factor was the paper's
# whole-image answer, in pairs (PAPER, PAIRS).
LAMBDA_01 = ["learner.kl_coef=0.1"]
PAIRS = ["rollout.prompts_per_step=32", "rollout.samples_per_prompt=2", *LAMBDA_01]  # 64 own samples a step as 32 x 2
PAPER = ["reward.strict_global=false", *PAIRS]  # the map scaled by the judge's whole-image answer (the paper's form)
RAFT = ["reward.binarize=true", "reward.centre=none", "learner.lr=1e-4", "learner.kl_coef=0.05"]  # filtered self-imitation


def on(base: list[str], *sets: str) -> list[str]:
    """`base` with `sets` in place of its own settings of the same keys: a row never sets one key twice."""
    keys = {x.split("=", 1)[0] for x in sets}
    return [x for x in base if x.split("=", 1)[0] not in keys] + list(sets)


ROWS = {
    # the default: the paper's map on the token grid scaled by the judge's fine-grained verdict, centred per prompt
    # over groups of 4 samples, lambda 0.05
    "srum": [],
    # the control: every weight 1 (self-imitation alone), at lambda 0.1 in pairs and at the default's lambda and groups
    "uniform": ["reward.map=uniform", "reward.centre=none", *PAPER],
    "uniform_lambda_0.05": ["reward.map=uniform", "reward.centre=none"],
    "global_answer": PAPER,  # the paper's form (the default until 2026-12-05)
    "global_answer_ray": ["engine=ray", "ray.max_staleness=1", *PAPER],
    "pairs": PAIRS,  # the default's judgement in pairs (32 x 2) and in groups of 8 (8 x 8)
    "group_8": ["rollout.prompts_per_step=8", "rollout.samples_per_prompt=8", *LAMBDA_01],
    "strict_global": ["reward.relations=false", *PAIRS],  # the fine-grained verdict without the relation reading
    "srum_ray": ["engine=ray", "ray.max_staleness=1"],
    "lambda_0.1": LAMBDA_01,  # the default of 2026-12-05 morning, with the Ray engine, at 2x and 4x the learning rate,
    "lambda_0.1_ray": ["engine=ray", "ray.max_staleness=1", *LAMBDA_01],
    "lambda_0.1_lr1e-4": ["learner.lr=1e-4", *LAMBDA_01],
    "lambda_0.1_lr2e-4": ["learner.lr=2e-4", *LAMBDA_01],
    "lambda_0.1_batch_128": ["rollout.prompts_per_step=32", *LAMBDA_01],  # ... at twice and half the samples a step
    "lambda_0.1_batch_32": ["rollout.prompts_per_step=8", *LAMBDA_01],
    "srum_kl0.02": ["learner.kl_coef=0.02"],
    # every knob of the paper's form, one at a time (measured on it, in pairs)
    "paper_map": ["reward.centre=none", *PAPER],
    "global_only": ["reward.use_local=false", *PAPER],
    "local_only": ["reward.use_global=false", *PAPER],
    "lambda_0": on(PAPER, "learner.kl_coef=0"),
    "binarized": ["reward.binarize=true", *PAPER],
    "lr_1e-4": ["learner.lr=1e-4", *PAPER],
    # diagnostics, not SRUM: CompWorld's oracle as the (global-only) judge, and with its regions (perfect local scores)
    "oracle_judge": ["reward.judge.engine=oracle", "reward.use_local=false", *PAPER],
    "oracle_regions": ["reward.judge.engine=oracle", *PAPER],
    # RAFT-style: a sample the judge passes weighs 0.5 (1 inside the regions it passes), one it fails 0; no centring
    "raft": on(PAPER, *RAFT[:2], "reward.use_local=false", *RAFT[2:]),
    "raft_fine": on(PAIRS, *RAFT),  # ... filtered by the fine-grained verdict
    "raft_oracle": on(PAPER, "reward.judge.engine=oracle", *RAFT[:2], "reward.use_local=false", *RAFT[2:]),
}
# the claim and its controls: every seed; the others one seed unless asked
SEEDED = ("srum", "uniform", "uniform_lambda_0.05")


def evaluate_base(cfg: TrainConfig, k: int, out: Path) -> dict:
    f = out / "base" / "report.json"
    if f.exists():
        return json.loads(f.read_text())
    model = load_model(cfg.model)
    return run_eval(model, heldout_set()[: cfg.eval.prompts], k, out / "base", cfg.eval.seed, SampleOptions.of(cfg.eval.sampling),
                    save_images=False, judge_model=model)


def run_row(config: Path, name: str, seed: int, budget: float, k: int, out: Path) -> dict:
    run = out / f"{name}_seed{seed}_{budget:g}min"  # a row of another budget is another run
    if (run / "results.json").exists():
        return json.loads((run / "results.json").read_text())
    sets = ROWS[name] + [f"seed={seed}", f"time_budget_min={budget}", "eval.at_start=false", f"eval.images_per_prompt={k}"]
    cfg = load_config(TrainConfig, config, sets)
    if cfg.engine == "ray":
        from srum.actors.driver import RayEngine

        return RayEngine(cfg, run, log=lambda *_: None).run()
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


def run_figures(r: dict) -> dict:
    """One run's figures (its results.json) as a table row holds them."""
    return summary(r["final"]) | {"steps": r["steps_done"], "train_seconds": r["train_seconds"],
                                  "samples_per_s": r.get("ray", {}).get("samples_per_s", r.get("samples_per_s")),
                                  "threads": r.get("torch_threads")}


def aggregate(by_seed: dict[str, dict], base: float) -> dict:
    """Mean (and standard error over seeds) of every figure of a row's runs; the runs' own figures are kept
    (`runs`, by seed), so seeds run by later commands join the same row."""
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


def markdown(res: dict) -> str:
    cols = ["overall", *CATEGORIES, "error_reduction", "gain_points", "judge_mean_global", "judge_balanced_accuracy", "gap",
            "steps", "samples_per_s", "threads"]

    def cell(row, c):
        v, se = row.get(c), row.get(f"{c}_se")
        return "" if v is None else f"{v} ± {se}" if se is not None else str(v)

    rows = [("base", 1, res["base"])] + [(n, row["seeds"], row) for n, row in res["rows"].items()]
    return "\n".join([
        (f"# SRUM on CompWorld-Bench: the built-in Janus, {res['eval_prompts']} held-out prompts x {res['images_per_prompt']} "
         f"images, {res['budget_min']} min of training on {res['machine']}"), "",
        (f"Each row was produced by its command (below the table; weights {res['model_sha256']}). Mean over seeds, ± one standard error where a row "
         "has several. `judge_*`: the frozen judge (the initial model's understanding) on the same images: its mean global "
         "score and its balanced accuracy against the oracle (reward hacking would raise the first and lower the second). "
         "`gap`: the judge's balanced accuracy minus the generator's score."), "",
        *md_table(["row", "seeds", *cols], [(n, k, *(cell(row, c) for c in cols)) for n, k, row in rows]), "",
        "Rows: " + "; ".join(f"`{n}`: {' '.join(ROWS[n]) or 'the default configuration'}" for n in res["rows"]), "",
        "Commands (a row's runs are kept, so rerunning its command rebuilds it without training):", "",
        *(f"- `{n}`: " + "; ".join(f"`{c}`" for c in row["commands"]) for n, row in res["rows"].items()), ""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("configs/srum-compworld.yaml"))
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--one-seed", type=int, default=0)
    ap.add_argument("--images-per-prompt", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--table", default="srum_compworld", help="docs/results/TABLE.{json,md}: one weights' table at one budget")
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.config)
    k = args.images_per_prompt
    sha = weights_sha256(cfg.model)[:12]
    args.out = args.out / sha  # runs of other weights are never resumed into this table
    res_file = RESULTS / f"{args.table}.json"
    previous(res_file, model_sha256=sha, budget_min=args.budget_min)  # another weights' table: refused before training
    base_report = evaluate_base(cfg, k, args.out)
    base = base_report["overall"]
    base_row = summary(base_report)
    base_row["gap"] = round(base_row["judge_balanced_accuracy"] - base, 4) if base_row.get("judge_balanced_accuracy") else None
    command = f"OMP_NUM_THREADS={torch.get_num_threads()} python bench/srum_compworld.py " + " ".join(sys.argv[1:])
    for name in filter(None, args.rows.split(",")):  # --rows "": the base evaluation only
        seeds = [int(s) for s in args.seeds.split(",")] if name in SEEDED else [args.one_seed]
        t = time.time()
        new_runs = {str(s): run_figures(run_row(args.config, name, s, args.budget_min, k, args.out)) for s in seeds}
        with table_lock(res_file):  # two benches run side by side: read the table after training, not before
            old = previous(res_file, model_sha256=sha, budget_min=args.budget_min)  # another table is kept, never mixed
            rows, old_row = old.get("rows", {}), old.get("rows", {}).get(name, {})
            by_seed = dict(sorted((old_row.get("runs", {}) | new_runs).items()))
            rows[name] = aggregate(by_seed, base) | {"commands": [c for c in old_row.get("commands", []) if c != command] + [command]}
            print(json.dumps({name: rows[name], "wall_s": round(time.time() - t)}), flush=True)
            res = {"command": command, "config": str(args.config),
                   "model": cfg.model, "model_sha256": sha, "budget_min": args.budget_min, "eval_prompts": cfg.eval.prompts,
                   "images_per_prompt": k, "eval_seed": cfg.eval.seed, "machine": "2 CPU cores", "base": base_row, "rows": rows}
            res |= {key: v for key, v in old.items() if key not in res}  # figures added by hand (the README's command 1) stay
            write(res_file.with_suffix(""), res, markdown(res), notes="\n## What the rows show")


if __name__ == "__main__":
    main()
