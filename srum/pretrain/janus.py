"""`srum pretrain` for the Janus built-in: from nothing to a Janus directory that draws and judges CompWorld.

Stage 1, the image tokenizer: a `JanusVQVAE` trained on renders (`patches`).
Stage 2, the model, on both tasks at once, the VQ frozen:
- generation: next image token of renders' VQ tokens after the prompt (prompts dropped 10 % of the time, the
  unconditional rows classifier-free guidance reads);
- understanding: yes/no on renders, their perturbed prompts and scenes, corruptions and edited scenes
  (`srum.world.examples`), and renders whose VQ tokens were edited (`token_edit`: an image token or two
  swapped, the way an autoregressive sampler errs), each labelled by the world's rules; plus next-token
  prediction of the question on images it truly describes (many bits per example where yes/no gives one).
Never a verdict on the model's own generations. Every batch is a pure function of (seed, step), so a resumed
run sees exactly the data an uninterrupted one would; weights, optimiser and EMA are checkpointed.
"""

from __future__ import annotations

import copy
import json
import resource
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..io import (
    load_metadata,
    write_json,
)
from ..models.device import resolve_device
from ..models.janus.build import build_janus
from ..world.oracle import DESCRIBE_WORDS
from .config import SETTINGS, JanusPretrainConfig
from .losses import (
    GroundingHead,
    gen_batch,
    generation_loss,
    und_batch,
    understanding_loss,
)
from .state import cosine, resume_module, save_module
from .tokenizer import train_tokenizer, trained_net
from .vocabulary import WORDS


def pretrain(cfg: JanusPretrainConfig, out: Path, log=print):
    """Both stages, resumable from out/state; writes out/model (the EMA weights), out/log.jsonl and the stats."""
    from transformers.utils import logging as hf_logging

    from ..models import model_dir
    from ..models.janus import JanusUMM

    hf_logging.disable_progress_bar()
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pretrain_config.json", cfg.model_dump(mode="json"))
    t_run = time.time()
    torch.manual_seed(cfg.seed)
    init = build_janus(out / "init", cfg.shape, WORDS + DESCRIBE_WORDS, seed=cfg.seed, settings=SETTINGS)
    model = JanusUMM.load(init)
    vq = model.net.model.vqmodel
    if cfg.init_from:  # a continuation: the trained model's weights, tokenizer included
        model.net.load_state_dict(trained_net(model_dir(cfg.init_from), model).state_dict())
        report = {"continued_from": cfg.init_from}
    else:
        if cfg.init_scale:
            _scale_init(model.net)
        report = train_tokenizer(cfg, vq, out / "state" / "tokenizer.safetensors", log)
    vq.requires_grad_(False).eval()
    model.to(resolve_device(cfg.device))

    trained = [p for n, p in model.net.named_parameters() if not n.startswith("model.vqmodel.")]
    ground = GroundingHead(cfg.shape.vision_hidden).to(model.device) if cfg.ground_coef else None
    opt = torch.optim.AdamW(trained + (list(ground.parameters()) if ground else []), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = copy.deepcopy(model.net).requires_grad_(False)
    state = out / "state" / "model.safetensors"
    step, elapsed = resume_module(state, model.net, opt, ema, ground)
    t0 = time.time() - elapsed
    logf = (out / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain: model", mininterval=5)
    model.net.train()
    vq.eval()
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * cosine(max(step - cfg.warmup, 0), cfg.steps - cfg.warmup)
        with _autocast(model, cfg):
            l_gen = generation_loss(model, *gen_batch(cfg, step))
            loss = l_gen
            if cfg.und_batch:
                l_yn, l_cap, acc, l_desc, l_ground = understanding_loss(model, *und_batch(cfg, step, model), cfg.describe_coef, ground,
                                                                          cfg.describe_relations)
                loss = loss + l_yn + cfg.caption_coef * l_cap
                loss = loss + (cfg.describe_coef * l_desc if l_desc is not None else 0.0) + (cfg.ground_coef * l_ground if ground else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        opt.step()
        _ema_update(ema, model.net, cfg.ema if step >= cfg.warmup else 0.0)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            rec = {"step": step, "gen": round(l_gen.item(), 4), "lr": round(opt.param_groups[0]["lr"], 6),
                   "elapsed_s": round(time.time() - t0, 1)}
            if cfg.und_batch:
                rec |= {"yesno": round(l_yn.item(), 4), "caption": round(l_cap.item(), 4), "yesno_acc": round(acc.item(), 4),
                        "describe": None if l_desc is None else round(l_desc.item(), 4),
                        "grounding": None if l_ground is None else round(l_ground.item(), 4)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.set_postfix({k: v for k, v in rec.items() if k in ("gen", "yesno", "yesno_acc")})
        over = cfg.time_budget_min and time.time() - t_run > 60 * cfg.time_budget_min
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or over:
            save_module(state, model.net, opt, step, time.time() - t0, {"peak_rss_mb": str(peak_rss_mb())}, ema, ground)
            _write_model(out, model, ema, cfg, report)
        if over:
            log(f"time budget of {cfg.time_budget_min} min reached at step {step}; the same command resumes")
            break
    bar.close()
    return JanusUMM.load(out / "model")


def _write_model(out: Path, model, ema, cfg: JanusPretrainConfig, tokenizer_report: dict) -> None:
    """out/model: the EMA weights as a Janus directory, with the run's config and stats beside them."""
    final = copy.copy(model)
    final.net = ema
    final.policy_version = 0
    final.save(out / "model")
    write_json(out / "model" / "pretrain_config.json", cfg.model_dump(mode="json"))
    write_json(out / "model" / "pretrain_stats.json", pretrain_stats(out, tokenizer_report))


def pretrain_stats(out: Path, tokenizer_report: dict) -> dict:
    """Steps, samples, wall time and peak memory of both stages."""
    cfg = json.loads((out / "pretrain_config.json").read_text())
    mod = load_metadata(out / "state" / "model.safetensors")
    reused = not (out / "state" / "tokenizer.safetensors").exists()  # tokenizer.init_from: trained elsewhere
    tok = {"step": "0", "elapsed_s": "0"} if reused else load_metadata(out / "state" / "tokenizer.safetensors")
    steps = int(mod["step"])
    return {"tokenizer": {"steps": int(tok["step"]), "wall_time_s": round(float(tok["elapsed_s"]), 1),
                          "renders": int(tok["step"]) * cfg["tokenizer"]["batch"], **tokenizer_report},
            "model": {"steps": steps, "wall_time_s": round(float(mod["elapsed_s"]), 1),
                      "generation_samples": steps * cfg["gen_batch"], "understanding_samples": steps * cfg["und_batch"]},
            "wall_time_s": round(float(tok["elapsed_s"]) + float(mod["elapsed_s"]), 1),
            "peak_rss_mb": max(float(mod.get("peak_rss_mb", 0)), peak_rss_mb()),
            "threads": cfg["threads"], "machine": "2 CPU cores (the CI machine type)"}


def _scale_init(net) -> None:
    """Janus initialises every weight at std 0.02, right for its 2048-wide layers. In a 128-wide model the image
    tokens' path into the language model (an 8-dim embedding, then two such layers) starts 150 x smaller than a
    text embedding, and the gradients through it as small: the generator learned the images' statistics but
    still ignored its prompt after 750 steps. Unit-variance embeddings and PyTorch's default (fan-in) init for the
    aligner give every input path the same scale."""
    m = net.model
    with torch.no_grad():
        torch.nn.init.normal_(m.generation_embeddings.weight, 0.0, 1.0)
    for layer in [m.generation_aligner.fc1, *m.generation_aligner.hidden_layers]:
        layer.reset_parameters()


def _autocast(model, cfg: JanusPretrainConfig):
    """bf16 autocast on a GPU (the backend's own), and on a CPU when the recipe asks for it."""
    if model.device.type == "cpu" and cfg.cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return model.autocast()


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            if p.requires_grad:
                e.mul_(decay).add_(p, alpha=1 - decay)




def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
