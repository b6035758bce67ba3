"""Stage 1 of pretraining, the image tokenizer: a `JanusVQVAE` trained on renders (`patches`), or reused from
a trained directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..io import (
    load_metadata,
)
from ..world.spec import COLORS
from .config import JanusPretrainConfig, TokenizerStage
from .patches import IGNORE, PatchDictionary, renders, round_trip_pass_rate, to_unit
from .state import cosine, resume_module, save_module

# ---- stage 1: the tokenizer ----


def train_tokenizer(cfg: JanusPretrainConfig, vq, state: Path, log) -> dict:
    """Train the VQ in place, resumable from `state` (weights, optimiser, step)."""
    t = cfg.tokenizer
    if t.init_from:
        return _reuse_tokenizer(vq, Path(t.init_from), cfg, log)
    opt = torch.optim.AdamW(vq.parameters(), lr=t.lr, weight_decay=0.0)
    step, elapsed = resume_module(state, vq, opt)
    if step >= t.steps:
        return json.loads(load_metadata(state)["report"])
    dictionary = PatchDictionary(cfg.seed, t.dictionary_renders, vq.config.num_embeddings, cfg.shape.image_size // cfg.shape.grid)
    log(f"patch dictionary: {len(dictionary.code)} codes for {dictionary.seen} distinct patches")
    refs = torch.tensor([COLORS[c] for c in COLORS] + [(0, 0, 0)]).float() / 127.5 - 1.0
    bar = tqdm(total=t.steps, initial=step, desc="pretrain: tokenizer", mininterval=5)
    t0 = time.time() - elapsed
    vq.train()
    while step < t.steps:
        for g in opt.param_groups:
            g["lr"] = t.lr * min(1.0, (step + 1) / 50) * cosine(step, t.steps)
        imgs, _ = renders(cfg.seed, step, t.batch, cfg.scenes)
        loss, acc = tokenizer_loss(vq, to_unit(imgs), dictionary.targets(imgs), t, refs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=round(loss.item(), 4), code_acc=round(acc, 4))
        if step % cfg.checkpoint_every == 0 or step == t.steps:
            report = {"codes": len(dictionary.code), "distinct_patches": dictionary.seen, "steps": step,
                      "seconds": round(time.time() - t0, 1)}
            save_module(state, vq, opt, step, time.time() - t0, {"report": json.dumps(report)})
    bar.close()
    vq.eval()
    with torch.no_grad():  # stored unit-norm: Janus's encode (raw distances) and decode (normalised) then agree
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=-1))
    report["round_trip_pass_rate_1000"] = round_trip_pass_rate(vq, cfg.seed + 1, 1000)
    save_module(state, vq, opt, step, time.time() - t0, {"report": json.dumps(report)})
    log(f"tokenizer: {report}")
    return report


def trained_net(src: Path, model):
    """The network of a trained Janus directory, refused unless it has this recipe's shape and vocabulary."""
    from ..models.janus import JanusUMM

    net = JanusUMM.load(src).net
    want = {k: v.shape for k, v in model.net.state_dict().items()}
    got = {k: v.shape for k, v in net.state_dict().items()}
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))[:3]
        raise ValueError(f"init_from: {src} has another shape or vocabulary than this recipe's (first differences: {diff})")
    return net


def _reuse_tokenizer(vq, src: Path, cfg: JanusPretrainConfig, log) -> dict:
    from transformers.models.janus.modeling_janus import JanusVQVAE

    if (src / "config.json").exists() and json.loads((src / "config.json").read_text()).get("model_type") == "janus":
        from ..models.janus import JanusUMM

        weights = JanusUMM.load(src).net.model.vqmodel.state_dict()
    else:
        weights = JanusVQVAE.from_pretrained(src, local_files_only=True).state_dict()
    vq.load_state_dict(weights)
    with torch.no_grad():  # unit norm, as trained: Janus's encode (raw distances) and decode (normalised) agree
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=-1))
    report = {"reused_from": str(src), "round_trip_pass_rate_1000": round_trip_pass_rate(vq.eval(), cfg.seed + 1, 1000)}
    log(f"tokenizer: {report}")
    return report


def tokenizer_loss(vq, x, target, t: TokenizerStage, refs) -> tuple[torch.Tensor, float]:
    """Encoder: each patch's code, classified against the normalised codebook. Decoder: the image drawn from the
    target codes (the encoder's own choice for a patch outside the dictionary): L1 + L2 + the cross-entropy of
    each pixel's nearest world colour, and the squared error of the hardest few pixels. Why the last: what the
    oracle misreads after a round trip are single pixels, mostly a triangle's two base corners drawn too dim;
    without them its box is 8 px wide, its fill 0.67, and it reads as a circle. Averaged over 1,024 pixels
    they barely move the loss."""
    temperature = t.temperature
    codebook = F.normalize(vq.quantize.embedding.weight, dim=-1)
    z = vq.quant_conv(vq.encoder(x))
    b, d, g, _ = z.shape
    z = F.normalize(z.permute(0, 2, 3, 1).reshape(b, g * g, d), dim=-1)
    logits = z @ codebook.T / temperature
    encode = F.cross_entropy(logits.reshape(b * g * g, -1), target.reshape(-1), ignore_index=IGNORE)
    codes = torch.where(target == IGNORE, logits.argmax(-1), target)
    rec = vq.decoder(vq.post_quant_conv(codebook[codes].view(b, g, g, d).permute(0, 3, 1, 2)))
    dist = ((rec[:, None] - refs[None, :, :, None, None]) ** 2).sum(2)  # (B, 7, H, W) to each world colour
    label = ((x[:, None] - refs[None, :, :, None, None]) ** 2).sum(2).argmin(1)
    ce = F.cross_entropy(-dist / 0.02, label)
    err = (rec - x).pow(2).sum(1).flatten()  # per pixel
    hard = err.topk(max(1, int(t.hard_share * err.numel()))).values.mean()
    loss = encode + (rec - x).abs().mean() + (rec - x).pow(2).mean() + t.label_coef * ce + t.hard_coef * hard
    known = target != IGNORE
    acc = float((logits.argmax(-1) == target)[known].float().mean()) if known.any() else 1.0
    return loss, acc


# ---- stage 2: data, each batch a pure function of (seed, step) ----
