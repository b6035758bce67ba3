"""Issue 18: SRUM on the built-in against its base and a control, on CompWorld-Bench. Writes
docs/results/srum_compworld.{json,md} (--table) and prints JSON rows as they finish.

    python bench/srum_compworld.py [--config configs/srum-compworld.yaml] [--budget-min 20] [--rows srum,uniform,...]
                                   [--seeds 0,1,2] [--one-seed 0] [--images-per-prompt 8] [--out runs/bench]
                                   [--table srum_compworld]

A table holds one set of weights at one budget: the bench refuses to write another's into it (name a new --table).

Every row is the same configuration and budget with one change (ROWS); `srum` and its controls run with --seeds
(SEEDED), the other rows with --one-seed. The controls: `uniform` (the same update on the model's own samples with
every weight 1: self-imitation alone) and `shuffled` (the default's weights, each given to another sample of its
step: the same weights and noise, no information about the sample). A run's training stops at the time budget (its
checkpoint, then the evaluation); each run directory keeps its results, so an interrupted bench resumes where it
was, and rows can be added later (same base weights). A run trains on the threads torch has (OMP_NUM_THREADS; the
table's `threads`): "20 minutes on 2 cores" is one run at a time with OMP_NUM_THREADS=2.

At every evaluation (300 held-out prompts x K images, the same evaluation seed for all, so rows are paired):
CompWorld-Bench overall and per category, and the frozen judge's view of the same images — its mean global score
and its balanced accuracy against the oracle — so a policy that learned to fool its judge would show it.
Error reduction = (after - before) / (1 - before). The gap = the judge's balanced accuracy - the generator's score.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from srum.config import TrainConfig, load_config
from srum.engine import LocalEngine
from srum.evaluate import run_eval
from srum.models import load_model, weights_sha256
from srum.world import CATEGORIES, heldout_set

from _previous import previous  # bench/ is on sys.path when a script in it runs

# Rows keep the configuration they ran, by name, when the default changes (their run directories were relabelled with
# the rows: docs/results/srum_compworld.md, "How it was run"). Until 2026-12-05 evening lambda was 0.1 (LAMBDA_01);
# before 2026-12-05 the map's global factor was the paper's whole-image answer, in pairs (PAPER, PAIRS).
LAMBDA_01 = ["learner.kl_coef=0.1"]
PAIRS = ["rollout.prompts_per_step=32", "rollout.samples_per_prompt=2", *LAMBDA_01]  # 64 own samples a step as 32 x 2
PAPER = ["reward.strict_global=false", *PAIRS]  # the map scaled by the judge's whole-image answer (the paper's form)


def on(base: list[str], *sets: str) -> list[str]:
    """`base` with `sets` in place of its own settings of the same keys: a row never sets one key twice."""
    keys = {x.split("=", 1)[0] for x in sets}
    return [x for x in base if x.split("=", 1)[0] not in keys] + list(sets)


ROWS = {
    # the default: the paper's map on the token grid, scaled by the judge's fine-grained verdict (global answer,
    # regions, relations read off the regions), centred per prompt over groups of 4 samples; lambda 0.05
    "srum": [],
    # the controls: the same update on the model's own samples with every weight 1 (self-imitation alone) ...
    "uniform": ["reward.map=uniform", "reward.centre=none", *PAPER],
    # ... measured at lambda 0.1 in pairs (above) and at the default's lambda 0.05 in groups of 4
    "uniform_lambda_0.05": ["reward.map=uniform", "reward.centre=none"],
    # ... and the default's weights, each given to another sample of its step (the same weights, no information)
    "shuffled": ["reward.shuffle=true", *PAPER],
    # the paper's form: the map's global factor is the judge's whole-image answer (the default until 2026-12-05)
    "global_answer": PAPER,
    "global_answer_ray": ["engine=ray", "ray.max_staleness=1", *PAPER],
    # the default's judgement in pairs (32 prompts x 2) and in groups of 8 (8 prompts x 8)
    "pairs": PAIRS,
    "group_8": ["rollout.prompts_per_step=8", "rollout.samples_per_prompt=8", *LAMBDA_01],
    # the fine-grained verdict without the relation reading (in pairs)
    "strict_global": ["reward.relations=false", *PAIRS],
    "srum_ray": ["engine=ray", "ray.max_staleness=1"],
    # the default of 2026-12-05 morning (lambda 0.1), and with the Ray engine
    "lambda_0.1": LAMBDA_01,
    "lambda_0.1_ray": ["engine=ray", "ray.max_staleness=1", *LAMBDA_01],
    # ... at 2x and 4x the learning rate: with groups of 4 (less noise in each step's direction), is the gain held back
    # by the step size?
    "lambda_0.1_lr1e-4": ["learner.lr=1e-4", *LAMBDA_01],
    "lambda_0.1_lr2e-4": ["learner.lr=2e-4", *LAMBDA_01],
    # ... twice the samples a step (32 prompts x 4, 128 samples): less noise in each direction, half the updates
    "lambda_0.1_batch_128": ["rollout.prompts_per_step=32", *LAMBDA_01],
    # ... more updates from the same judged samples: each batch learned twice (a second optimiser step on the same
    # samples and maps), or half the batch a step (8 prompts x 4)
    "lambda_0.1_updates_2": ["learner.updates_per_batch=2", *LAMBDA_01],
    "lambda_0.1_batch_32": ["rollout.prompts_per_step=8", *LAMBDA_01],
    # ... the reference moved to the policy every 50 updates (rounds of SRUM)
    "lambda_0.1_reference_50": ["learner.reference_every=50", *LAMBDA_01],
    # the anchor looser still: lambda 0.02
    "srum_kl0.02": ["learner.kl_coef=0.02"],
    # every knob of the paper's form, one at a time (measured on it, in pairs)
    "paper_map": ["reward.centre=none", *PAPER],
    "paper_map_lr1e-4": ["reward.centre=none", "learner.lr=1e-4", *PAPER],
    "uniform_lr1e-4": ["reward.map=uniform", "reward.centre=none", "learner.lr=1e-4", *PAPER],
    "global_only": ["reward.use_local=false", *PAPER],
    "local_only": ["reward.use_global=false", *PAPER],
    "lambda_0": on(PAPER, "learner.kl_coef=0"),
    "binarized": ["reward.binarize=true", *PAPER],
    "signed_map": ["reward.map=signed", *PAPER],
    "centred_batch": ["reward.centre=batch", *PAPER],
    "lr_1e-4": ["learner.lr=1e-4", *PAPER],  # is the gain held back by the step size?
    # a bigger batch per update (256 own samples instead of 64): less noise in each step's direction
    "batch_256": on(PAPER, "rollout.prompts_per_step=128"),
    "batch_256_x4": on(PAPER, "rollout.prompts_per_step=64", "rollout.samples_per_prompt=4"),
    # diagnostics, not SRUM: the same update with CompWorld's oracle as the (global-only) judge ...
    "oracle_judge": ["reward.judge.engine=oracle", "reward.use_local=false", *PAPER],
    # ... and with its regions: every detected object +1 if the prompt names it, else -1 (perfect local scores)
    "oracle_regions": ["reward.judge.engine=oracle", *PAPER],
    # filtered self-imitation (RAFT-style): a sample the judge passes weighs 0.5 (1 inside the regions it passes,
    # with the local judge), one it fails 0; no centring, so nothing is pushed away; the calibration's update
    "raft": on(PAPER, "reward.binarize=true", "reward.centre=none", "reward.use_local=false", "learner.lr=1e-4",
               "learner.kl_coef=0.05"),
    # ... filtered by the judge's fine-grained verdict (global, regions and relations)
    "raft_fine": on(PAIRS, "reward.binarize=true", "reward.centre=none", "learner.lr=1e-4", "learner.kl_coef=0.05"),
    "raft_oracle": on(PAPER, "reward.judge.engine=oracle", "reward.binarize=true", "reward.centre=none",
                      "reward.use_local=false", "learner.lr=1e-4", "learner.kl_coef=0.05"),
    # ... balanced over prompts: 8 samples of each of 8 prompts, each prompt's judged successes sharing one prompt's
    # worth of weight (reward.centre=prompt_scale), so a hard prompt's rare success counts as much as an easy one's many
    "raft_share": on(PAPER, "reward.binarize=true", "reward.centre=prompt_scale", "reward.use_local=false",
                     "learner.lr=1e-4", "rollout.prompts_per_step=8", "rollout.samples_per_prompt=8"),
}
# the claim and its controls: every seed; the others one seed unless asked
SEEDED = ("srum", "uniform", "uniform_lambda_0.05", "paper_map_lr1e-4", "uniform_lr1e-4")
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def evaluate_base(cfg: TrainConfig, k: int, out: Path) -> dict:
    f = out / "base" / "report.json"
    if f.exists():
        return json.loads(f.read_text())
    model = load_model(cfg.model)
    return run_eval(model, heldout_set()[: cfg.eval.prompts], k, out / "base", cfg.eval.seed, cfg.eval.sampling.options(),
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


def mean_se(values: list[float]) -> tuple[float, float | None]:
    m = statistics.fmean(values)
    return round(m, 4), (round(statistics.stdev(values) / len(values) ** 0.5, 4) if len(values) > 1 else None)


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
        vals = [row[key] for row in rows if row.get(key) is not None]
        if vals:
            out[key], se = mean_se(vals)
            if se is not None:
                out[f"{key}_se"] = se
    er = [(row["overall"] - base) / (1 - base) for row in rows]
    out["error_reduction"], se = mean_se(er)
    if se is not None:
        out["error_reduction_se"] = se
    out["gain_points"] = round(100 * (out["overall"] - base), 2)
    if out.get("judge_balanced_accuracy") is not None:
        out["gap"] = round(out["judge_balanced_accuracy"] - out["overall"], 4)
    return out | {"runs": by_seed}


def commands_of(row: dict) -> list[str]:
    return row.get("commands") or ([row["command"]] if "command" in row else [])  # older tables kept one


def markdown(res: dict) -> str:
    b = res["base"]
    cols = ["overall", *CATEGORIES, "error_reduction", "gain_points", "judge_mean_global", "judge_balanced_accuracy", "gap",
            "steps", "samples_per_s", "threads"]
    lines = [(f"# SRUM on CompWorld-Bench: the built-in Janus, {res['eval_prompts']} held-out prompts x {res['images_per_prompt']} "
             f"images, {res['budget_min']} min of training on {res['machine']}"), "",
             (f"Each row was produced by its command (below the table; weights {res['model_sha256']}). Mean over seeds, ± one standard error where a row "
             "has several. `judge_*`: the frozen judge (the initial model's understanding) on the same images: its mean global "
             "score and its balanced accuracy against the oracle (reward hacking would raise the first and lower the second). "
             "`gap`: the judge's balanced accuracy minus the generator's score."), "",
             "| row | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]

    def cell(row, c):
        v = row.get(c)
        if v is None:
            return ""
        se = row.get(f"{c}_se")
        return f"{v} ± {se}" if se is not None else str(v)

    lines.append("| base | 1 | " + " | ".join(cell(b, c) for c in cols) + " |")
    for name, row in res["rows"].items():
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cell(row, c) for c in cols) + " |")
    lines += ["", "Rows: " + "; ".join(f"`{n}`: {' '.join(ROWS[n]) or 'the default configuration'}" for n in res["rows"]), "",
              "Commands (a row's runs are kept, so rerunning its command rebuilds it without training):", ""]
    lines += [f"- `{n}`: " + "; ".join(f"`{c}`" for c in commands_of(row)) for n, row in res["rows"].items()] + [""]
    return "\n".join(lines)


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
    res_file, md_file = RESULTS / f"{args.table}.json", RESULTS / f"{args.table}.md"
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
            rows = old.get("rows", {})
            old_row = rows.get(name, {})
            if old_row.get("seeds", 0) > len(old_row.get("runs", {})):
                print(f"row {name}: the table kept only the mean of its older seeds, not their figures; the row now holds "
                      f"seeds {seeds} alone", file=sys.stderr)
                old_row = {}
            by_seed = old_row.get("runs", {}) | new_runs
            commands = commands_of(old_row)
            rows[name] = aggregate(dict(sorted(by_seed.items())), base) | {"commands": [c for c in commands if c != command] + [command]}
            print(json.dumps({name: rows[name], "wall_s": round(time.time() - t)}), flush=True)
            res = {"command": command, "config": str(args.config),
                   "model": cfg.model, "model_sha256": sha, "budget_min": args.budget_min, "eval_prompts": cfg.eval.prompts,
                   "images_per_prompt": k, "eval_seed": cfg.eval.seed, "machine": "2 CPU cores", "base": base_row, "rows": rows}
            res |= {key: v for key, v in old.items() if key not in res}  # figures added by hand (the README's command 1) stay
            RESULTS.mkdir(parents=True, exist_ok=True)
            res_file.write_text(json.dumps(res, indent=2) + "\n")
            md_file.write_text(markdown(res) + _notes(md_file))


@contextlib.contextmanager
def table_lock(res_file: Path):
    """An exclusive lock beside the table (TABLE.json.lock), held while a bench reads, merges and writes it."""
    res_file.parent.mkdir(parents=True, exist_ok=True)
    with open(res_file.with_name(res_file.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _notes(md: Path) -> str:
    """The hand-written section under the table, kept across regenerations."""
    marker = "\n## What the rows show"
    return marker + md.read_text().partition(marker)[2] if md.exists() and marker in md.read_text() else ""


if __name__ == "__main__":
    main()
