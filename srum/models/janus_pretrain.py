"""`srum pretrain` for the Janus built-in: from nothing to a Janus directory that draws and judges CompWorld.

Stage 1, the image tokenizer: a `JanusVQVAE` trained on renders (`janus_vq`).
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
import math
import random
import resource
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from ..io import (
    load_metadata,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
    write_json,
)
from ..world import layout, passes, training_spec
from ..world.corrupt import EDITS, global_noise
from ..world.examples import token_objects, und_example
from ..world.oracle import DESCRIBE_WORDS, MAP_COLORS, MAP_SHAPES, describe
from ..world.render import draw
from ..world.spec import COLORS
from .device import DEVICE, resolve_device
from .janus_build import JanusShape, build_janus
from .janus_vq import IGNORE, PatchDictionary, renders, round_trip_pass_rate, to_unit
from .tokenizer import QUESTION, WORDS

SETTINGS = {"question": QUESTION, "yes": "yes", "no": "no"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerStage(Section):
    steps: int = Field(1000, ge=0)
    batch: int = Field(64, ge=1)
    lr: float = 2e-3
    dictionary_renders: int = Field(100_000, ge=1)
    temperature: float = 0.05  # of the encoder's code classification
    init_from: str | None = None  # reuse a trained tokenizer: a JanusVQVAE directory, or a Janus model directory
    label_coef: float = 0.1  # cross-entropy of each decoded pixel's nearest world colour: what the oracle reads
    hard_coef: float = 1.0  # squared error of the hardest `hard_share` of the batch's pixels
    hard_share: float = Field(0.005, gt=0, le=1)


class JanusPretrainConfig(Section):
    """Defaults: the shipped built-in's recipe (configs/pretrain-janus.yaml)."""
    backend: Literal["janus"] = "janus"
    shape: JanusShape = JanusShape()
    seed: int = 0
    tokenizer: TokenizerStage = TokenizerStage()
    steps: int = Field(6500, ge=1)
    gen_batch: int = Field(64, ge=1)
    und_batch: int = Field(64, ge=0)
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cond_drop: float = Field(0.1, ge=0, le=1)
    caption_coef: float = 0.5
    describe_coef: float = Field(0.5, ge=0)  # weight of "it shows <what the oracle sees>" after every answer
    describe_relations: bool = False  # the description also says how the objects stand ("... to the left of ...")
    ground_coef: float = Field(0.0, ge=0)  # weight of the vision tower's per-patch (colour, shape by the rules) loss
    und_resized: float = Field(0.1, ge=0, le=1)
    und_edited: float = Field(0.3, ge=0, le=1)
    und_edits: list[Literal[EDITS]] = Field(default_factory=lambda: list(EDITS), min_length=1)
    und_blobs: float = Field(0.0, ge=0, le=1)
    und_token_edits: float = Field(0.15, ge=0, le=1)  # share of renders with a VQ token or two edited
    und_free_layouts: float = Field(0.0, ge=0, le=1)  # share of related scenes placed freely (examples.und_example)
    und_reversed_relations: float = Field(0.0, ge=0, le=1)  # share of related scenes asked with the relation reversed
    # continue from a trained Janus directory or `builtin` (its tokenizer and model) instead of from nothing
    init_from: str | None = None
    ema: float = Field(0.995, ge=0, lt=1)
    init_scale: bool = True  # re-initialise the image-token input path at the scale of a text embedding (_scale_init)
    checkpoint_every: int = Field(250, ge=1)
    threads: int = Field(2, ge=1)
    device: str = Field("cpu", pattern=DEVICE)
    # stage 2 on a CPU under bf16 autocast (weights, optimiser and EMA stay fp32): on these AVX-512-BF16 machines
    # the generation loss's forward + backward runs 1.7x and the understanding loss's 1.3x faster (docs/pretraining.md)
    cpu_bf16: bool = True
    time_budget_min: float = Field(0.0, ge=0)  # stop (and save) after this many minutes of this run; 0 = none


# ---- stage 1: the tokenizer ----


def train_tokenizer(cfg: JanusPretrainConfig, vq, state: Path, log) -> dict:
    """Train the VQ in place, resumable from `state` (weights, optimiser, step)."""
    t = cfg.tokenizer
    if t.init_from:
        return _reuse_tokenizer(vq, Path(t.init_from), cfg, log)
    opt = torch.optim.AdamW(vq.parameters(), lr=t.lr, weight_decay=0.0)
    step, elapsed = _resume_module(state, vq, opt)
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
            g["lr"] = t.lr * min(1.0, (step + 1) / 50) * _cosine(step, t.steps)
        imgs, _ = renders(cfg.seed, step, t.batch)
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
            _save_module(state, vq, opt, step, time.time() - t0, {"report": json.dumps(report)})
    bar.close()
    vq.eval()
    with torch.no_grad():  # stored unit-norm: Janus's encode (raw distances) and decode (normalised) then agree
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=-1))
    report["round_trip_pass_rate_1000"] = round_trip_pass_rate(vq, cfg.seed + 1, 1000)
    _save_module(state, vq, opt, step, time.time() - t0, {"report": json.dumps(report)})
    log(f"tokenizer: {report}")
    return report


def _trained_net(src: Path, model):
    """The network of a trained Janus directory, refused unless it has this recipe's shape and vocabulary."""
    from . import backend_of
    from .janus import JanusUMM

    if backend_of(src) != "janus":  # backend_of refuses what is no model directory at all, with the reason
        raise ValueError(f"init_from: {src} is srum's mot model, not a Janus one")
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
        from .janus import JanusUMM

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


def gen_batch(cfg: JanusPretrainConfig, step: int) -> tuple[np.ndarray, list[str], list[bool]]:
    """Renders of training-stream prompts, their prompts, and which rows drop the prompt (for CFG)."""
    rng = random.Random(f"janus-gen/{cfg.seed}/{step}")
    specs = [training_spec(cfg.seed, step * cfg.gen_batch + i) for i in range(cfg.gen_batch)]
    imgs = np.stack([draw(layout(s, rng)) for s in specs])
    return imgs, [s.prompt for s in specs], [rng.random() < cfg.cond_drop for _ in specs]


def und_batch(cfg: JanusPretrainConfig, step: int, model) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(images, prompts asked about, yes/no labels), labelled by the world's rules."""
    rng = random.Random(f"janus-und/{cfg.seed}/{step}")
    imgs, texts, labels = [], [], []
    edit_rows = []
    for i in range(cfg.und_batch):
        spec = training_spec(cfg.seed + 1, step * cfg.und_batch + i)
        if rng.random() < cfg.und_token_edits:
            edit_rows.append(len(imgs))
            imgs.append(draw(layout(spec, rng)))
            texts.append(spec.prompt)
            labels.append(None)
            continue
        img, text, label, _ = und_example(rng, spec, cfg.und_resized, cfg.und_edited, tuple(cfg.und_edits), 0.0, cfg.und_blobs,
                                          cfg.und_free_layouts, cfg.und_reversed_relations)
        imgs.append(img), texts.append(text), labels.append(label)
    if edit_rows:
        edited = token_edit(model, np.stack([imgs[i] for i in edit_rows]), rng)
        for i, img in zip(edit_rows, edited):
            imgs[i] = global_noise(img, rng)
            labels[i] = passes(imgs[i], training_spec(cfg.seed + 1, step * cfg.und_batch + i))
    return np.stack(imgs), texts, np.array(labels, np.float32)


def token_edit(model, images: np.ndarray, rng: random.Random) -> np.ndarray:
    """Renders with one to three of their image tokens replaced by the token of another position of the same
    image (an object's patch where background was, an edge of one shape on another), decoded by the VQ."""
    tokens = model.encode(images)
    for row in tokens:
        for _ in range(rng.choice([1, 1, 2, 3])):
            row[rng.randrange(len(row))] = row[rng.randrange(len(row))]
    return model.decode(tokens)


# ---- stage 2: losses ----


def generation_loss(model, imgs: np.ndarray, prompts: list[str], drop: list[bool]) -> torch.Tensor:
    tokens = torch.as_tensor(model.encode(imgs))
    logits = model.image_logits(prompts, tokens, drop)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.to(logits.device).reshape(-1))


def understanding_loss(model, imgs: np.ndarray, texts: list[str], labels: np.ndarray, describe_coef: float = 0.0,
                       ground=None, relations: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(class-balanced yes/no loss, caption loss on true captions, yes/no accuracy, description loss or None).

    With `describe_coef`, every question is followed by its answer and "it shows <what the oracle sees>"
    (`oracle.describe`), and the description is learned by next-token prediction: every example, positive or
    negative, then teaches the model to read counts, colours and shapes token by token, where the yes/no answer
    teaches one bit. Only the answer position is ever read when judging. With `relations`, the description also
    names how the objects stand ("a red square to the left of a blue circle").

    With `ground` (a GroundingHead), the vision tower's output at every patch also learns which object it shows,
    by the world's rules (`examples.token_objects`: colour, and the shape its whole component has): the features
    reach the language model already knowing their objects, where the yes/no bit teaches that slowly.
    (Returns the grounding loss, or None, last.)"""
    questions = [model.question(t) for t in texts]
    tails = [f"{'yes' if y > 0.5 else 'no'} it shows {describe(img, relations)}" for img, y in zip(imgs, labels)] if describe_coef else None
    inputs = {k: v.to(model.device) for k, v in model.understanding_inputs(imgs, questions, tails).items()}
    vision = model.net.model.get_image_features(inputs.pop("pixel_values"), return_dict=True)
    logits = model.net(**inputs, mm_encoder_outputs={"image": vision}).logits.float()
    grounded = ground.loss(vision.last_hidden_state, imgs, model.image_size // model.grid) if ground is not None else None
    ids = inputs["input_ids"]
    n_tail = torch.tensor([len(model.tok(t, add_special_tokens=False).input_ids) for t in tails]) if tails else torch.zeros(len(texts), dtype=torch.long)
    rows = torch.arange(len(ids))
    at = (ids.shape[1] - 1 - n_tail).to(ids.device)  # the position that predicts the answer (left padding: ends align)
    answer = logits[rows, at][:, [model.yes, model.no]]
    margin = answer[:, 0] - answer[:, 1]
    y = torch.as_tensor(labels).to(model.device)
    pos = y.mean().clamp(0.05, 0.95)
    yes_no = F.binary_cross_entropy_with_logits(margin, y, weight=torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos)))
    eoi = model.tok.convert_tokens_to_ids(model.tok.eoi_token)
    col = torch.arange(ids.shape[1], device=ids.device)[None]
    after_image = (ids == eoi).long().cumsum(1) > 0  # the question's tokens follow <end_of_image>
    in_question = after_image & (col < at[:, None])  # up to the question's last token, never the answer
    target = ids[:, 1:].masked_fill(~(in_question[:, :-1] & (ids[:, 1:] != eoi)) | (y[:, None] < 0.5), IGNORE)
    caption = _next_token_loss(logits, target)
    described = None
    if tails:  # the tokens after the answer: "it shows ..."
        described = _next_token_loss(logits, ids[:, 1:].masked_fill(col[:, 1:] <= (at + 1)[:, None], IGNORE))
    return yes_no, caption, ((margin > 0).float() == y).float().mean(), described, grounded


class GroundingHead(torch.nn.Module):
    """A linear read-out of the vision tower's patch features: (colour, shape by the rules) of the object each
    patch shows. Pretraining only: it is not part of the Janus model and is not saved with it."""

    def __init__(self, width: int):
        super().__init__()
        self.colour, self.shape = torch.nn.Linear(width, len(MAP_COLORS)), torch.nn.Linear(width, len(MAP_SHAPES))

    def loss(self, features: torch.Tensor, imgs: np.ndarray, patch: int) -> torch.Tensor:
        target = torch.as_tensor(np.stack([token_objects(img, patch) for img in imgs])).to(features.device)  # (B, N, 2)
        obj = (target[..., 0] > 0).float()  # object patches weigh as much as all background ones together
        w = torch.where(obj > 0, 0.5 / obj.mean().clamp(min=1e-3), 0.5 / (1 - obj.mean()).clamp(min=1e-3))
        ce = F.cross_entropy(self.colour(features).flatten(0, 1), target[..., 0].flatten(), reduction="none") + \
            F.cross_entropy(self.shape(features).flatten(0, 1), target[..., 1].flatten(), reduction="none")
        return (ce * w.flatten()).mean()


def _next_token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits[:, t] against target[:, t] (the token at t + 1), 0 when no target is set (a batch
    with no true caption)."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


# ---- the run ----


def pretrain(cfg: JanusPretrainConfig, out: Path, log=print):
    """Both stages, resumable from out/state; writes out/model (the EMA weights), out/log.jsonl and the stats."""
    from transformers.utils import logging as hf_logging

    from . import model_dir
    from .janus import JanusUMM

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
        model.net.load_state_dict(_trained_net(model_dir(cfg.init_from), model).state_dict())
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
    step, elapsed = _resume_module(state, model.net, opt, ema, ground)
    t0 = time.time() - elapsed
    logf = (out / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain: model", mininterval=5)
    model.net.train()
    vq.eval()
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * _cosine(max(step - cfg.warmup, 0), cfg.steps - cfg.warmup)
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
            _save_module(state, model.net, opt, step, time.time() - t0, {"peak_rss_mb": str(peak_rss_mb())}, ema, ground)
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
    return model._autocast()


def _cosine(step: int, total: int) -> float:
    """Cosine decay to 5 % of the peak."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            if p.requires_grad:
                e.mul_(decay).add_(p, alpha=1 - decay)


def _save_module(path: Path, net, opt, step: int, elapsed: float, meta: dict, ema=None, head=None) -> None:
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()} | optimizer_tensors(opt)
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    if head is not None:
        tensors |= {f"head.{k}": v for k, v in head.state_dict().items()}
    save_tensors(tensors, path, {"step": str(step), "elapsed_s": str(elapsed), **meta})


def _resume_module(path: Path, net, opt, ema=None, head=None) -> tuple[int, float]:
    """(step, seconds so far) of a saved stage, its state loaded into net / opt / ema / head; (0, 0) if none."""
    if not path.exists():
        return 0, 0.0
    t, meta = load_tensors(path), load_metadata(path)
    net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    if head is not None:
        head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    load_optimizer(opt, t)
    return int(meta["step"]), float(meta["elapsed_s"])


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
