"""`srum pretrain`: train the built-in MoT model on CompWorld renders.

Generation: rectified flow on rendered images of training-stream prompts (10 % empty prompts for
classifier-free guidance). Understanding: yes/no questions on renders with hard negatives (perturbed
prompts, renders of perturbed scenes, image-space corruptions, object crops). Every batch is a pure
function of (seed, step), so a resumed run sees exactly the data an uninterrupted one would.
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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from ..io import (
    load_metadata,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
    write_json,
)
from ..world import layout, training_spec
from ..world.corrupt import EDITS
from ..world.examples import token_objects, und_example
from ..world.oracle import (
    MAP_COLORS,
    MAP_SHAPES,
    MIN_PIXELS,
    classify_shape,
    label_pixels,
)
from ..world.render import draw
from . import regions
from .device import DEVICE, resolve_device
from .mot import MotUMM, to_unit
from .mot_net import MotConfig, patchify


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["mot"] = "mot"
    model: MotConfig = MotConfig()
    seed: int = 0
    steps: int = 6000
    gen_batch: int = Field(64, ge=0)  # 0: understanding only; the generation expert's weights stay exactly as they start
    und_batch: int = 64
    und_every: int = Field(1, ge=1)  # an understanding batch every k steps: spend a stage's compute on the weaker side
    lr: float = 1e-3
    warmup: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cond_drop: float = 0.1
    caption_coef: float = 0.5
    und_resized: float = Field(0.0, ge=0, le=1)  # share of understanding examples with objects redrawn at other sizes
    und_resize_each: float = Field(0.0, ge=0, le=1)  # resized examples: each object redrawn with this chance (0: one or two)
    und_edited: float = Field(0.0, ge=0, le=1)  # share whose scene has an object added, changed or removed (edit_scene)
    und_blobs: float = Field(0.0, ge=0, le=1)  # share whose objects are redrawn as a generator's lumpy blobs (blob)
    und_edits: list[Literal[EDITS]] = Field(default_factory=lambda: list(EDITS[:3]), min_length=1)
    ground_coef: float = Field(0.0, ge=0)  # weight of the dense grounding loss (needs model.und_grounding); 0 = off
    ema: float = 0.999
    checkpoint_every: int = 250
    threads: int = 2
    device: str = Field("cpu", pattern=DEVICE)  # cpu, cuda[:i] or auto; the data is made on CPU workers either way
    workers: int = Field(0, ge=0)  # data-loading processes (0: in the training process); a GPU host needs ~1 per core
    time_budget_min: float = 0.0  # stop (and save) after this many minutes; 0 = no limit
    stop_at: int = Field(0, ge=0)  # stop (and save) at this step, the schedule still that of `steps`; 0 = at `steps`
    init_from: str | None = None  # warm start from a model directory (new modules keep their init)
    new_lr_scale: float = Field(1.0, gt=0)  # learning-rate multiplier for the modules init_from does not have

    @model_validator(mode="after")
    def _every_step_trains(self):
        if self.gen_batch == 0 and self.und_every != 1:
            raise ValueError(f"gen_batch 0 with und_every {self.und_every}: steps without an understanding batch would train nothing")
        if self.new_lr_scale != 1 and not self.init_from:
            raise ValueError(f"new_lr_scale {self.new_lr_scale} needs init_from: without a warm start no module is new")
        if self.ground_coef and not self.model.und_grounding:
            raise ValueError(f"ground_coef {self.ground_coef} needs model.und_grounding: true (the head it trains)")
        return self


# ---- data: each batch a pure function of (seed, step) ----


def gen_batch(cfg: PretrainConfig, step: int) -> tuple[np.ndarray, list[str]] | None:
    if cfg.gen_batch == 0:
        return None
    rng = random.Random(f"gen/{cfg.seed}/{step}")
    specs = [training_spec(cfg.seed, step * cfg.gen_batch + i) for i in range(cfg.gen_batch)]
    imgs = np.stack([draw(layout(s, rng)) for s in specs])
    prompts = ["" if rng.random() < cfg.cond_drop else s.prompt for s in specs]
    return imgs, prompts


def und_batch(cfg: PretrainConfig, step: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray | None]:
    """(images, texts, yes/no labels, grounding targets per image token, or None when grounding is off)."""
    rng = random.Random(f"und/{cfg.seed}/{step}")
    ex = [und_example(rng, training_spec(cfg.seed + 1, step * cfg.und_batch + i), cfg.und_resized, cfg.und_edited,
                      tuple(cfg.und_edits), cfg.und_resize_each, cfg.und_blobs)
          for i in range(cfg.und_batch)]
    imgs, texts, labels, _ = zip(*ex)
    targets = None
    if cfg.ground_coef and cfg.model.und_regions:
        targets = np.stack([region_objects(img, cfg.model.und_regions) for img in imgs])
    elif cfg.ground_coef:
        targets = np.stack([token_objects(img, cfg.model.patch) for img in imgs])
    return np.stack(imgs), list(texts), np.array(labels, np.float32), targets


IGNORE = -100  # a grounding target that no loss reads (F.cross_entropy's ignore_index)


def region_objects(image: np.ndarray, k: int) -> np.ndarray:
    """(k, 2) int64: per object token (the model's segmenter's components, srum/models/regions.py), the
    (colour, shape) `object_map` gives its pixels: the world's rules applied to the component; IGNORE for
    the slots of an image with fewer than k regions."""
    out = np.full((k, 2), IGNORE, np.int64)
    for slot, r in enumerate(regions.components(label_pixels(image)[None], k)[0]):
        shape = classify_shape(*r.size, r.area) if r.area >= MIN_PIXELS else "fragment"
        out[slot] = r.paint + 1, MAP_SHAPES.index(shape)  # MAP_COLORS is background, then the paints in order
    return out


class StepBatches(torch.utils.data.Dataset):
    """Item i = the (generation, understanding) batches of step `first + i`: a pure function of the step,
    so loading them in worker processes changes nothing but the speed."""

    def __init__(self, cfg: PretrainConfig, first: int):
        self.cfg, self.first = cfg, first

    def __len__(self) -> int:
        return self.cfg.steps - self.first

    def __getitem__(self, i: int):
        step = self.first + i
        return gen_batch(self.cfg, step), (und_batch(self.cfg, step) if step % self.cfg.und_every == 0 else None)


def _as_is(item):
    return item


def batches(cfg: PretrainConfig, first: int):
    return torch.utils.data.DataLoader(StepBatches(cfg, first), batch_size=None, shuffle=False, collate_fn=_as_is,
                                       num_workers=cfg.workers, prefetch_factor=8 if cfg.workers else None)


# ---- losses ----


def flow_loss(model: MotUMM, imgs: np.ndarray, prompts: list[str], g: torch.Generator) -> torch.Tensor:
    x0 = patchify(to_unit(imgs), model.cfg.patch).to(model.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    t = torch.rand(x0.shape[0], generator=g).to(x0.device)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    v = model.velocity(x_t, t, model.tok.batch(prompts, model.cfg.gen_text_len))
    return F.mse_loss(v, eps - x0)


def understanding_loss(model: MotUMM, imgs: np.ndarray, texts: list[str], labels: np.ndarray, targets: np.ndarray | None = None):
    """(yes/no loss, caption loss, yes/no accuracy, grounding loss or None). The caption loss — next-token
    prediction of the question on images it truly describes — gives the understanding expert many bits per
    example where the yes/no answer gives one; it is what makes the judge learn in CPU-hours (as BAGEL's
    understanding is trained by next-token prediction). The grounding loss (with `targets`) asks every image
    token which object it shows, by the world's rules: the fine rules (fill, aspect, minimum size) that a
    yes/no bit teaches slowly, taught per token."""
    grounded = targets is not None
    logits, answer, ids, *ground = model.understand(imgs, [model.question(t) for t in texts], grounding=grounded)
    margin = answer[:, 0] - answer[:, 1]  # log P(yes) - log P(no)
    y = torch.as_tensor(labels).to(model.device)
    # Class-balanced: yes and no weigh the same in every batch, as balanced accuracy counts them.
    pos = y.mean().clamp(0.05, 0.95)
    yes_no = F.binary_cross_entropy_with_logits(margin, y, weight=torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos)))
    nxt = ids[:, 1:].clone()
    nxt[(nxt == model.tok.ans) | (y[:, None] < 0.5)] = model.tok.pad  # only true captions, not the <ans> slot
    caption = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), nxt.reshape(-1), ignore_index=model.tok.pad)
    grounding = _grounding_loss(ground[0], torch.as_tensor(targets).to(model.device)) if grounded else None
    return yes_no, caption, ((margin > 0).float() == y).float().mean(), grounding


def _grounding_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token's colour and shape, object tokens weighted as much as all background
    tokens together (most tokens are background)."""
    colour, shape = logits.split([len(MAP_COLORS), len(MAP_SHAPES)], -1)
    obj = (targets[..., 0] > 0).float()  # IGNORE (an empty object-token slot) counts as neither
    w = torch.where(obj > 0, 0.5 / obj.mean().clamp(min=1e-3), 0.5 / (1 - obj.mean()).clamp(min=1e-3))
    ce = F.cross_entropy(colour.flatten(0, 1), targets[..., 0].flatten(), reduction="none", ignore_index=IGNORE) + \
        F.cross_entropy(shape.flatten(0, 1), targets[..., 1].flatten(), reduction="none", ignore_index=IGNORE)
    return (ce * w.flatten()).mean()


# ---- the loop ----


def lr_at(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def pretrain(cfg: PretrainConfig, out: Path, log=print) -> MotUMM:
    """Train (resuming from out/state if present); writes out/model (EMA weights) and out/log.jsonl."""
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pretrain_config.json", cfg.model_dump())
    torch.manual_seed(cfg.seed)
    model = MotUMM(cfg.model).to(resolve_device(cfg.device))
    ema = copy.deepcopy(model.net).requires_grad_(False)
    frozen = set(model.generation_parameters()) if cfg.gen_batch == 0 else set()
    opt = torch.optim.AdamW(_param_groups(cfg, model, frozen), lr=cfg.lr, weight_decay=cfg.weight_decay)
    trained = [p for group in opt.param_groups for p in group["params"]]
    if cfg.init_from and not (out / "state").exists():
        _warm_start(model, ema, Path(cfg.init_from), log)
    step, elapsed, peak = _resume(out / "state", model, ema, opt)
    t_start, logf = time.time() - elapsed, (out / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", mininterval=5)
    l_und = l_cap = acc = torch.tensor(float("nan"))
    l_ground = None
    for gen_data, und_data in batches(cfg, step):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step) * group["lr_scale"]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        l_gen = flow_loss(model, *gen_data, g) if gen_data is not None else None  # None: an understanding-only stage
        loss = l_gen if l_gen is not None else 0.0
        if und_data is not None:  # logged below: the newest understanding figures
            l_und, l_cap, acc, l_ground = understanding_loss(model, *und_data)
            loss = loss + l_und + cfg.caption_coef * l_cap + (cfg.ground_coef * l_ground if l_ground is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        opt.step()
        _ema_update(ema, model.net, cfg.ema if step > cfg.warmup else 0.0, skip=frozen)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            rec = {"step": step, "flow": None if l_gen is None else round(l_gen.item(), 5), "yesno": round(l_und.item(), 5), "caption": round(l_cap.item(), 4),
                   "yesno_acc": round(acc.item(), 4), "grounding": None if l_ground is None else round(l_ground.item(), 4), "lr": lr_at(cfg, step), "elapsed_s": round(time.time() - t_start, 1)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.set_postfix(flow=rec["flow"], yesno=rec["yesno"], acc=rec["yesno_acc"])
        stop_now = (cfg.time_budget_min and time.time() - t_start > 60 * cfg.time_budget_min) or step == cfg.stop_at
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop_now:
            _save(out, step, time.time() - t_start, max(peak, peak_rss_mb()), model, ema, opt, cfg)
        if stop_now:
            log(f"stopped at step {step} (stop_at {cfg.stop_at}, time budget {cfg.time_budget_min} min)")
            break
    bar.close()
    final = MotUMM(cfg.model, model.tok, ema)
    return final


def _param_groups(cfg: PretrainConfig, model: MotUMM, frozen: set[str]) -> list[dict]:
    """The trained parameters; with `new_lr_scale`, those init_from lacks (new modules, starting from their
    random initialisation) in a second group that learns faster than the trained ones are fine-tuned."""
    trained = [(n, p) for n, p in model.net.named_parameters() if n not in frozen]
    if cfg.new_lr_scale == 1 or not cfg.init_from:
        return [{"params": [p for _, p in trained], "lr_scale": 1.0}]
    old = set(_source_weights(Path(cfg.init_from)))
    groups = [{"params": [p for n, p in trained if n in old], "lr_scale": 1.0},
              {"params": [p for n, p in trained if n not in old], "lr_scale": cfg.new_lr_scale}]
    return [g for g in groups if g["params"]]


def _source_weights(src: Path) -> dict[str, torch.Tensor]:
    """A warm start's weights: a pretraining run directory's latest raw weights, or a model directory's."""
    state = src / "state" / "train_state.safetensors"
    if state.exists():
        return raw_weights(load_tensors(state))
    if (src / "model.safetensors").exists():
        return load_tensors(src / "model.safetensors")
    raise FileNotFoundError(f"init_from {src}: neither a pretraining run nor a model directory")


def _warm_start(model: MotUMM, ema, src: Path, log) -> None:
    """Start from another run's weights (`_source_weights`). Modules the source lacks keep their
    initialisation (zero-output where it matters)."""
    weights = _source_weights(src)
    own = model.net.state_dict()
    weights = {k: _widen(v, own[k]) if k in own else v for k, v in weights.items()}
    missing, unexpected = model.net.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"init_from {src}: weights the model does not have: {unexpected[:5]}")
    ema.load_state_dict(model.net.state_dict())
    log(f"warm start from {src}; new modules: {sorted({k.split('.')[0] for k in missing})}")


def _widen(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A trained weight for a layer that now takes more inputs (dim 1: e.g. the vision encoder's new palette
    channels): the trained part is kept and the new inputs start at zero, so the warm-started model
    computes exactly what the source did."""
    if src.shape == like.shape:
        return src
    grown = src.dim() == like.dim() >= 2 and src.shape[0] == like.shape[0] and src.shape[2:] == like.shape[2:]
    if not grown or src.shape[1] > like.shape[1]:
        raise ValueError(f"init_from: a weight of shape {tuple(src.shape)} does not fit {tuple(like.shape)}")
    out = torch.zeros_like(like)
    out[:, : src.shape[1]] = src
    return out


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float, skip: set[str] = frozenset()) -> None:
    """`skip`: frozen weights, left untouched (x * d + x * (1 - d) is not always x in float32)."""
    with torch.no_grad():
        for (name, e), p in zip(ema.state_dict().items(), net.state_dict().values()):
            if name not in skip:
                e.mul_(decay).add_(p, alpha=1 - decay)


def _save(out: Path, step: int, elapsed: float, peak_mb: float, model: MotUMM, ema, opt, cfg: PretrainConfig) -> None:
    MotUMM(model.cfg, model.tok, ema).save(out / "model")
    write_json(out / "model" / "pretrain_config.json", cfg.model_dump())
    tensors = {f"net.{k}": v for k, v in model.net.state_dict().items()} | optimizer_tensors(opt)
    meta = {"step": str(step), "elapsed_s": str(elapsed), "peak_rss_mb": str(peak_mb)}
    save_tensors(tensors, out / "state" / "train_state.safetensors", meta)
    write_json(out / "model" / "pretrain_stats.json", pretrain_stats(out))


def pretrain_stats(run: Path) -> dict:
    """Steps, wall time and peak memory of a pretraining run, summed over every run it warm-started from."""
    meta = load_metadata(run / "state" / "train_state.safetensors")
    cfg = json.loads((run / "pretrain_config.json").read_text())
    step = int(meta["step"])
    stats = {"steps": step, "wall_time_s": round(float(meta["elapsed_s"]), 1), "peak_rss_mb": float(meta["peak_rss_mb"]),
             "generation_samples": step * cfg["gen_batch"],
             "understanding_samples": -(-step // cfg.get("und_every", 1)) * cfg["und_batch"],
             "threads": cfg["threads"], "machine": "2 CPU cores (the CI machine type)"}
    before = _stats_before(Path(cfg["init_from"])) if cfg.get("init_from") else None
    if before:
        keys = ("steps", "wall_time_s", "peak_rss_mb")
        stats["stages"] = before.get("stages", [{k: before[k] for k in keys}]) + [{k: stats[k] for k in keys}]
        for k in ("steps", "wall_time_s", "generation_samples", "understanding_samples"):
            stats[k] = round(stats[k] + before[k], 1)
        stats["peak_rss_mb"] = max(stats["peak_rss_mb"], before["peak_rss_mb"])
    return stats


def _stats_before(src: Path) -> dict | None:
    """What the warm-start source had cost: a pretraining run's own record, or the one a model directory
    (a run's model/, or the shipped checkpoint) carries with it."""
    if (src / "state").exists():
        return pretrain_stats(src)
    if (src / "pretrain_stats.json").exists():
        return json.loads((src / "pretrain_stats.json").read_text())
    return None


def raw_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's raw (not EMA) weights from a run's train_state tensors (stored as "net.<name>")."""
    return {k[4:]: v for k, v in state.items() if k.startswith("net.")}


def _resume(state_dir: Path, model: MotUMM, ema, opt) -> tuple[int, float, float]:
    """(step, wall time so far, peak memory so far) of the run in `state_dir`, loading its state."""
    f = state_dir / "train_state.safetensors"
    if not f.exists():
        return 0, 0.0, 0.0
    meta = load_metadata(f)
    t = load_tensors(f)
    model.net.load_state_dict(raw_weights(t))
    ema.load_state_dict(MotUMM.load(state_dir.parent / "model").net.state_dict())
    load_optimizer(opt, t)
    return int(meta["step"]), float(meta["elapsed_s"]), float(meta.get("peak_rss_mb", 0.0))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
