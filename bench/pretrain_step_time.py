"""Issue 17: where a stage-2 pretraining step of the built-in Janus spends its time, and how it scales with
torch threads. Times the shipped recipe's pieces on the shipped weights (configs/pretrain-janus.yaml's batches):
making the generation batch (renders), the generation loss forward + backward, making the understanding batch
(renders, corruptions, token edits through the VQ), the understanding loss forward + backward, the optimiser.
Prints JSON (median seconds per piece over --steps steps, per thread count); nothing else may run meanwhile.

    python bench/pretrain_step_time.py [--threads 1,2] [--steps 8] [--out docs/results/pretrain_step_time.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from srum.config import load_config
from srum.models import load_model
from srum.models.janus_pretrain import JanusPretrainConfig, gen_batch, generation_loss, und_batch, understanding_loss


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(cfg: JanusPretrainConfig, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    model = load_model("builtin")
    model.net.train()
    model.net.model.vqmodel.eval()
    trained = [p for n, p in model.net.named_parameters() if not n.startswith("model.vqmodel.")]
    opt = torch.optim.AdamW(trained, lr=1e-5)
    parts: dict[str, list[float]] = {k: [] for k in ("gen_data", "gen_loss_fwd_bwd", "und_data", "und_loss_fwd_bwd", "optimizer", "step")}
    for step in range(steps + 1):  # step 0 warms up and is not counted
        t0 = time.perf_counter()
        g, t_gd = timed(lambda: gen_batch(cfg, step))
        l_gen, t_gl = timed(lambda: generation_loss(model, *g))
        _, t_gb = timed(l_gen.backward)
        u, t_ud = timed(lambda: und_batch(cfg, step, model))
        (l_yn, l_cap, _, l_desc, _), t_ul = timed(lambda: understanding_loss(model, *u, cfg.describe_coef))
        loss = l_yn + cfg.caption_coef * l_cap + (cfg.describe_coef * l_desc if l_desc is not None else 0.0)
        _, t_ub = timed(loss.backward)
        _, t_opt = timed(lambda: (torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip), opt.step(), opt.zero_grad()))
        if step:
            for k, v in zip(parts, (t_gd, t_gl + t_gb, t_ud, t_ul + t_ub, t_opt, time.perf_counter() - t0)):
                parts[k].append(v)
    med = {k: round(statistics.median(v), 4) for k, v in parts.items()}
    return {"threads": threads, "median_s": med,
            "generation_samples_per_s": round(cfg.gen_batch / med["step"], 1),
            "share": {k: round(v / med["step"], 3) for k, v in med.items() if k != "step"}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("configs/pretrain-janus.yaml"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/results/pretrain_step_time.json"))
    args = ap.parse_args()
    cfg = load_config(JanusPretrainConfig, args.config)
    rows = [measure(cfg, int(t), args.steps) for t in args.threads.split(",")]
    res = {"what": "a stage-2 step of the shipped recipe, in pieces (median over steps)", "config": str(args.config),
           "gen_batch": cfg.gen_batch, "und_batch": cfg.und_batch, "steps": args.steps, "machine": "2 CPU cores", "rows": rows}
    if len(rows) > 1:
        res["speedup_step"] = round(rows[0]["median_s"]["step"] / rows[-1]["median_s"]["step"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
