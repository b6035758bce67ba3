"""Issue 17, the Janus backend's speed on one device (CPU, or CUDA with bf16 autocast): the built-in's generation
(KV cache against none, the ratio per run), judge, stage-2 pretraining step and SRUM learner step; then a random model
of Janus-Pro-1B's shapes (384 px, 576 image tokens, 24 x 2048 language model) built in memory (`--pro tiny`: a small
stand-in of that layout; `none`: skipped). Prints JSON (medians of --runs) and writes --out.

    python bench/janus_speed.py --device cuda [--runs 3] [--pro 1b|tiny|none] [--out docs/results/janus_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from srum.config import LearnerConfig, RewardConfig
from srum.learner.learner import Learner
from srum.models import SampleOptions, load_model, weights_sha256
from srum.models.janus import JanusUMM
from srum.models.janus.build import JanusShape, janus_config, processor_for, word_tokenizer
from srum.models.janus.directory import DEFAULTS
from srum.pretrain import JanusPretrainConfig
from srum.pretrain.losses import gen_batch, generation_loss, und_batch, understanding_loss
from srum.records import Judgement
from srum.rollout.draw import draw_rollouts
from srum.world import heldout_set

from common import timed

PRO_1B = JanusShape(image_size=384, patch_size=16, hidden=2048, layers=24, heads=16, mlp=5632, vision_hidden=1024,
                    vision_layers=24, vision_heads=16, codebook=16384, code_dim=8, vq_channels=128,
                    vq_multipliers=[1, 1, 2, 2, 4], vq_latent=256, max_positions=4096)
PRO_TINY = JanusShape(image_size=64, patch_size=16, hidden=64, layers=2, heads=2, mlp=128, vision_hidden=32,
                      vision_layers=1, vision_heads=2, codebook=64, vq_multipliers=[1, 1, 2, 2, 4], vq_latent=32)
PRO_VOCAB = 102_400  # Janus-Pro's text vocabulary: the understanding head's width


def generation(model: JanusUMM, prompts: list[str], runs: int, opts: SampleOptions | None = None, without_cache: bool = True) -> dict:
    """Images/s of one `sample` call over `prompts` (after one warm-up), with and without the KV cache."""
    d = model.device
    model.sample(prompts[:2], 0, opts)  # warm-up: kernels, allocator
    cached, plain, ratio = [], [], []
    for r in range(runs):
        cached.append(len(prompts) / timed(lambda: model.sample(prompts, r, opts), d))
        if without_cache:
            plain.append(len(prompts) / timed(lambda: model.sample(prompts, r, opts, kv_cache=False), d))
            ratio.append(cached[-1] / plain[-1])
    out = {"batch": len(prompts), "images_per_s": round(statistics.median(cached), 2), "per_run": [round(x, 2) for x in cached]}
    return out | ({"images_per_s_without_kv_cache": round(statistics.median(plain), 2), "kv_cache_speedup_per_run": [round(x, 2) for x in ratio],
                   "kv_cache_speedup_median": round(statistics.median(ratio), 2)} if without_cache else {})


def judging(model: JanusUMM, images: np.ndarray, prompts: list[str], runs: int, batch: int) -> dict:
    q = [model.question(p) for p in prompts]
    model.judge_yes_prob(images[:batch], q[:batch], batch)  # warm-up
    rates = [len(q) / timed(lambda: model.judge_yes_prob(images, q, batch), model.device) for _ in range(runs)]
    return {"images": len(q), "batch": batch, "images_per_s": round(statistics.median(rates), 1)}


def learner_step(model: JanusUMM, prompts: list[str], runs: int, train: str = "generation") -> dict:
    """Seconds of one SRUM update (teacher-forced policy + reference forward, weighted NLL + KL, AdamW) on
    len(prompts) of the model's own samples with a paper-form map."""
    rollouts = draw_rollouts(model, prompts, 1, 0)
    size = rollouts[0].image.shape[0]
    js = [Judgement(r.id, 0.5, [], np.full((size, size), 0.75, np.float32)) for r in rollouts]
    learner = Learner(model, LearnerConfig(lr=1e-6, train=train), RewardConfig(centre="none"))
    g = torch.Generator().manual_seed(0)
    learner.step(list(zip(rollouts, js)), g)  # warm-up
    sec = statistics.median(timed(lambda: learner.step(list(zip(rollouts, js)), g), model.device) for _ in range(runs))
    return {"samples": len(prompts), "image_tokens": int(rollouts[0].latent.size), "train": train,
            "seconds_per_step": round(sec, 4), "samples_per_s": round(len(prompts) / sec, 1)}


def pretrain_step(model: JanusUMM, batch: int, runs: int) -> dict:
    """Seconds of one stage-2 pretraining step of the shipped recipe at `batch` (generation + understanding
    examples each), split into making the batches (CPU) and the losses' forward + backward + AdamW (device)."""
    cfg = JanusPretrainConfig(gen_batch=batch, und_batch=batch)
    model.net.train()
    model.net.model.vqmodel.eval()
    params = [p.requires_grad_(True) for n, p in model.net.named_parameters() if not n.startswith("model.vqmodel.")]
    opt = torch.optim.AdamW(params, lr=1e-6)
    data, compute = [], []
    for step in range(runs + 1):
        t = time.perf_counter()
        g, u = gen_batch(cfg, step), und_batch(cfg, step, model)
        t_data = time.perf_counter() - t

        def update():
            with model.autocast():
                yn, cap, _, desc, _ = understanding_loss(model, *u, cfg.describe_coef)
                loss = generation_loss(model, *g) + yn + cfg.caption_coef * cap + cfg.describe_coef * desc
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t_compute = timed(update, model.device)
        if step:  # step 0 warms up
            data.append(t_data), compute.append(t_compute)
    model.net.eval()
    med_c = statistics.median(compute)
    return {"batch": batch, "make_batches_s": round(statistics.median(data), 4), "losses_and_update_s": round(med_c, 4),
            "generation_samples_per_s_compute_only": round(batch / med_c, 1)}


def builtin(device: str, runs: int, out: dict, report) -> dict:
    """Each figure lands in `out` (and is reported) as soon as it is measured: a run cut short keeps what it had."""
    model = load_model("builtin", device)
    prompts = [s.prompt for s in heldout_set()]
    imgs, _ = model.sample(prompts[:64], 0)
    out["weights_sha256"] = weights_sha256("builtin")[:12]
    parts = {"generation_batch_64": lambda: generation(model, prompts[:64], runs),
             "judge_batch_64": lambda: judging(model, np.repeat(imgs, 4, 0), [p for p in prompts[:64] for _ in range(4)], runs, 64),
             "judge_batch_256": lambda: judging(model, np.repeat(imgs, 16, 0), [p for p in prompts[:64] for _ in range(16)], runs, 256),
             "generation_batch_300": lambda: generation(model, prompts, runs, without_cache=False),
             "learner_step_64": lambda: learner_step(load_model("builtin", device), prompts[:64], runs),
             "pretrain_step_64": lambda: pretrain_step(model, 64, runs),
             "pretrain_step_256": lambda: pretrain_step(model, 256, runs)}
    for name, measure in parts.items():
        t = time.perf_counter()
        out[name] = measure() | {"wall_s": round(time.perf_counter() - t, 1)}
        report()
    return out


def pro_shaped(device: str, runs: int, shape: JanusShape, vocab: int) -> dict:
    """A random model of Janus-Pro's layout, built on the device from a config (no files, nothing downloaded)."""
    from transformers import JanusForConditionalGeneration

    words = sorted({w for s in heldout_set() for w in s.prompt.split()} | set(DEFAULTS["question"].replace("?", " ?").replace(".", " .").split()))
    tok = word_tokenizer(words + ["Yes", "No", "?", "."])
    cfg = janus_config(shape, tok)
    cfg.text_config.vocab_size = max(vocab, len(tok))
    t = time.perf_counter()
    with torch.device(device):
        torch.manual_seed(0)
        net = JanusForConditionalGeneration(cfg)
    build_s = time.perf_counter() - t
    model, prompts = JanusUMM(net, processor_for(shape, tok)), [s.prompt for s in heldout_set()]
    imgs, _ = model.sample(prompts[:8], 0)
    out = {"shape": shape.model_dump(), "text_vocab": cfg.text_config.vocab_size, "parameters": sum(p.numel() for p in net.parameters()),
           "weights_dtype": "float32, bf16 autocast" if device == "cuda" else "float32", "build_s": round(build_s, 1),
           "image_tokens": shape.grid**2,
           "generation_batch_16_cfg5": generation(model, prompts[:16], runs, SampleOptions(cfg_scale=5.0), without_cache=False),
           "generation_batch_64_cfg5": generation(model, prompts[:64], 1, SampleOptions(cfg_scale=5.0), without_cache=False),
           "judge_batch_16": judging(model, np.repeat(imgs, 8, 0), [p for p in prompts[:8] for _ in range(8)], runs, 16),
           "learner_step_8_full": learner_step(model, prompts[:8], runs)}
    del net, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pro", choices=["1b", "tiny", "none"], default="1b")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    result = {"command": "python bench/janus_speed.py " + " ".join(sys.argv[1:]), "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": args.runs}

    def report():
        if args.device.startswith("cuda"):
            result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        text = json.dumps(result, indent=2)
        print(text, flush=True)
        if args.out:
            args.out.write_text(text + "\n")

    result["builtin"] = {}
    builtin(args.device, args.runs, result["builtin"], report)
    if args.pro != "none":
        shape, vocab = (PRO_1B, PRO_VOCAB) if args.pro == "1b" else (PRO_TINY, 0)
        result["janus_pro_shaped"] = pro_shaped(args.device, args.runs, shape, vocab)
        report()


if __name__ == "__main__":
    main()
