"""Ray engine benchmarks (issue 5): prints JSON, writes docs/results/ray_pipeline.{json,md}.

(a) pipeline efficiency = end-to-end samples/s / throughput of the slowest stage, with stand-in stages that sleep
    (srum's own overhead; 1/2/4 generators); the real tiny model end to end (the stages share 2 cores)
(b) streaming (max_staleness 1) vs lock-step (0)
(d) generators 1 -> 2 -> 4 (one thread each), real tiny model: samples/s
Rates are steady-state: from the `skip`-th learner step to the last (actor start-up excluded). At tag
archive/experiments-2026-12 (docs/results/ray_pipeline.md, notes): (a)'s isolated stages of the real model and its
efficiency, (b)'s offline row, (c) the weight broadcast.

    python bench/ray_pipeline.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import ray
import torch

from srum.actors.driver import RayEngine, start_local_ray
from srum.config import TrainConfig, load_config

from common import jsonl, md_table, write

BASE = ["eval.at_start=false", "eval.at_end=false", "checkpoint_every=100000", "sample_every=100000",
        "rollout.prompts_per_step=16", "rollout.samples_per_prompt=2", "rollout.sampling.steps=10", "ray.status_every=1000",
        "ray.generator.num_cpus=0.25", "ray.judge.num_cpus=0.25", "ray.learner.num_cpus=0.25"]
# Generation is the slowest stage by design (as on real hardware, where it costs 100x more than judging):
# with 4 generators it delivers a batch every 50 ms; judge and learner take 20 ms of sleep per batch.
STAND_IN = {"generate_s": 0.2, "judge_s": 0.02, "learn_s": 0.02, "weights_mb": 10}


def ray_run(steps: int, sets: list[str], skip: int = 5) -> dict:
    cfg = load_config(TrainConfig, None, BASE + [f"steps={steps}"] + sets)
    with tempfile.TemporaryDirectory() as d:
        s = RayEngine(cfg, Path(d) / "run", lambda *_: None).run()["ray"]
        rows = jsonl(Path(d) / "run" / "metrics.jsonl")
        a, b = rows[skip], rows[-1]
        s["steady_samples_per_s"] = round((b["step"] - a["step"]) * cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
                                          / (b["t"] - a["t"]), 3)
    return s


def stand_in_efficiency(runs: int, steps: int) -> dict:
    out, per_batch = {}, 32
    for n in (1, 2, 4):
        sets = [f"ray.generators={n}", "ray.stages=stand_in", f"ray.max_staleness={n + 2}"] + \
               [f"ray.stand_in.{k}={v}" for k, v in STAND_IN.items()]
        isolated = min(n * per_batch / STAND_IN["generate_s"], per_batch / STAND_IN["judge_s"], per_batch / STAND_IN["learn_s"])
        xs = [ray_run(steps, sets)["steady_samples_per_s"] for _ in range(runs)]
        med = statistics.median(xs)
        out[f"{n}_generators"] = {"samples_per_s_median": round(med, 2), "runs": xs, "slowest_stage_samples_per_s": round(isolated, 2),
                                  "efficiency": round(med / isolated, 3), "max_staleness": n + 2}
    return {"stand_in_seconds_per_batch": STAND_IN, "batch": per_batch, **out}


def to_markdown(r: dict) -> str:
    a, m = r["a_stand_in"], r["a_real_model"]
    rates = lambda d: [(k, v["samples_per_s_median"]) for k, v in d.items()]  # noqa: E731
    return "\n".join([
        "# Ray engine benchmarks (2-core machine)", "", (f"Command: `python bench/ray_pipeline.py --runs {r['runs']}`; "
        "medians of the runs; rates are steady-state (from learner step 5 on)."), "",
        "## (a) Pipeline efficiency, stand-in stages (sleep, no CPU): srum's own overhead", "",
        f"Stand-in seconds per batch of {a['batch']}: {a['stand_in_seconds_per_batch']}.", "",
        *md_table(["generators", "max_staleness", "samples/s", "slowest stage samples/s", "efficiency"], [
            (n, x["max_staleness"], x["samples_per_s_median"], x["slowest_stage_samples_per_s"], f"**{x['efficiency']}**")
            for n in (1, 2, 4) for x in [a[f"{n}_generators"]]]),
        "", "## (a) Pipeline efficiency, real tiny model (1 generator, 1 judge, 1 learner, 1 thread each, 2 shared cores)", "",
        f"End to end: {m['samples_per_s_median']} samples/s. The isolated stage throughput and the efficiency: the notes below.", "",
        "## (b) Streaming vs lock-step (equal samples, real tiny model)", "", *md_table(["mode", "samples/s"], rates(r["b_modes"])),
        "", "## (d) Generators 1 -> 2 -> 4 (one thread each, real tiny model, 2 cores)", "",
        *md_table(["generators", "samples/s"], rates(r["d_generators"]))]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, not for the record)")
    args = ap.parse_args()
    steps, real_steps = (12, 8) if args.quick else (100, 16)
    start_local_ray(num_cpus=8, log_to_driver=False)

    def ray_rate(sets: list[str], key: str = "steady_samples_per_s", skip: int = 3) -> dict:
        xs = [ray_run(real_steps, sets, skip)[key] for _ in range(args.runs)]
        return {"samples_per_s_median": round(statistics.median(xs), 2), "runs": xs}

    r = {"runs": args.runs, "machine": f"{torch.get_num_threads()} cores"}
    parts = {"a_stand_in": lambda: stand_in_efficiency(args.runs, steps),
             "a_real_model": lambda: ray_rate(["ray.max_staleness=1"]),
             "b_modes": lambda: {"streaming (max_staleness 1)": ray_rate(["ray.max_staleness=1"], "samples_per_s", 0),
                                 "lock-step (max_staleness 0)": ray_rate(["ray.max_staleness=0"], "samples_per_s", 0)},
             "d_generators": lambda: {str(n): ray_rate([f"ray.generators={n}", f"ray.max_staleness={n + 1}"]) for n in (1, 2, 4)}}
    for name, measure in parts.items():
        r[name] = measure()
        print(json.dumps(r[name]), flush=True)
    ray.shutdown()
    if not args.quick:
        write("ray_pipeline", r, to_markdown(r))
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
