"""The learner: collates scored rollouts, takes one KL-regularised reward-weighted step, versions
the policy, and saves / restores its state (safetensors, atomic)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..config import LearnerConfig, RewardConfig
from ..io import (
    StopRun,
    load_metadata,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
)
from ..records import Judgement, Rollout
from ..testing.faults import fault_fires
from .advantages import centre, pool_to_tokens, shuffled_within_groups
from .objective import srum_loss


class NonFiniteError(StopRun):
    """A non-finite loss term, gradient or weight at an update: the step is not taken, the run stops."""


class Learner:
    def __init__(self, policy, cfg: LearnerConfig, reward: RewardConfig, group: int = 1):
        self.policy, self.cfg, self.reward, self.group = policy, cfg, reward, group  # group: samples per prompt
        if reward.centre == "prompt" and group < 2:  # a sample alone against its own mean: every weight 0
            raise ValueError(f"reward.centre {reward.centre} needs several samples per prompt (group {group})")
        if reward.shuffle and group < 2:  # no other sample of the prompt to take the judgement of
            raise ValueError(f"reward.shuffle needs several samples per prompt (group {group})")
        # The frozen reference is the initial policy (the learner is made before a resume loads weights): the KL
        # term keeps the update near it. A backend may make it without a copy (LoRA: adapters switched off).
        self.reference = policy.make_reference()
        # Parameters as views of one buffer, made before the optimiser sees them: the buffer is what gets
        # published to the rollout workers, without a snapshot copy per version.
        self.weights_buffer = policy.flatten_parameters()
        names = set(policy.trainable(cfg.train))
        params = []
        for n, p in policy.net.named_parameters():
            p.requires_grad_(n in names)
            if p.requires_grad:
                params.append(p)
        self.params = params
        # fp32 master weights: a bf16 model (BAGEL's generation expert on a GPU) steps fp32 copies of its weights, so
        # an update below a bf16 ulp accumulates rather than vanishing (or drifting: UniRL's bf16 master); the bf16
        # weights, which are what is published, are the masters rounded after each step. fp32 weights are their own.
        self.master = [p if p.dtype == torch.float32 else p.detach().float() for p in params]
        self.opt = torch.optim.AdamW(self.master, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        self.version = policy.policy_version

    def token_weights(self, judgements: list[Judgement], tokens: int | None = None) -> torch.Tensor:
        """The maps pooled to the backend's token grid; `tokens`: the latents' token count, when a flow model drew
        them at another square size than its default (sampling.height / width)."""
        if self.reward.shuffle:  # the control: every sample gets another sample's map of its prompt
            judgements = [judgements[i] for i in shuffled_within_groups(len(judgements), self.group, self.version)]
        grid = self.policy.token_grid
        if tokens is not None and tokens != grid * grid:
            grid = math.isqrt(tokens)
            if grid * grid != tokens:
                raise ValueError(f"latents of {tokens} tokens: not a square grid (train on square images)")
        maps = np.stack([j.reward_map for j in judgements])
        if not (np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0):  # the maps' declared range
            i = next(i for i, m in enumerate(maps) if not (np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0))
            raise NonFiniteError("reward_map", f"update {self.version + 1}: the reward map of {judgements[i].rollout_id} "
                                 f"lies outside [0, 1] (min {maps[i].min()}, max {maps[i].max()}); nothing was learned "
                                 "from it", self.version + 1)
        w = pool_to_tokens(maps, grid)
        return centre(w, self.reward.centre, self.group)

    def step(self, batch: list[tuple[Rollout, Judgement]], generator: torch.Generator, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
        """One optimiser step on a judged batch, one new version. shard = (rank, world): a data-parallel learner
        computes its equal share of the batch, then averages gradients (and the logged losses) over the process
        group: every rank takes the same step, the one a single learner would take on the whole batch."""
        rollouts, judgements = zip(*batch)
        latents = torch.from_numpy(np.stack([r.latent for r in rollouts]))
        w = self.token_weights(list(judgements), latents.shape[1])  # centring needs the whole batch
        rank, world = shard
        rows = slice(rank * len(batch) // world, (rank + 1) * len(batch) // world)
        losses = srum_loss(self.policy, self.reference, latents, [r.prompt for r in rollouts], w, self.cfg.kl_coef,
                           generator, rows)
        if fault_fires("nan_loss", self.version + 1):  # fault injection (srum/testing/faults.py)
            losses["total"] = losses["total"] * float("nan")
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.grads_to_master()  # first: the ranks average fp32 gradients, and a bf16 weight's stays on its master
        if world > 1:
            losses = average_over_ranks(self.master, losses, world)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.master, self.cfg.grad_clip)
        # Before the step: a non-finite loss, gradient or weight is never applied (the weights stay as the newest
        # checkpoint and the last published version left them) and stops the run by name.
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        bad += ["gradient"] if not torch.isfinite(grad_norm) else []
        bad += ["weights"] if not torch.isfinite(self.weights_buffer).all() else []
        if bad:
            self.opt.zero_grad(set_to_none=True)
            raise NonFiniteError("non_finite", f"update {self.version + 1}: non-finite {', '.join(bad)} "
                                 f"({', '.join(f'{k} {float(v.detach())}' for k, v in losses.items())}, grad_norm "
                                 f"{float(grad_norm)}); the step was skipped, nothing was written from it", self.version + 1)
        self.opt.step()
        with torch.no_grad():
            for m, p in zip(self.master, self.params):
                if m is not p:
                    p.copy_(m)  # rounded to the model's dtype: the weights the generators will run
        self.opt.zero_grad(set_to_none=True)  # the gradients are spent: not held through the next step's forward
        if not torch.isfinite(self.weights_buffer).all():  # a finite gradient that overflowed a weight
            raise NonFiniteError("non_finite", f"update {self.version + 1}: the step made weights non-finite; nothing "
                                 "was written from it", self.version + 1)
        self.version += 1
        self.policy.policy_version = self.version
        return {**{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(grad_norm), "weight_mean": float(w.mean())}

    def grads_to_master(self) -> None:
        """A bf16 weight's gradient, in fp32, onto its master (the optimiser sees only the masters)."""
        for m, p in zip(self.master, self.params):
            if m is not p:
                m.grad, p.grad = (None if p.grad is None else p.grad.float()), None

    # ---- state ----
    def save(self, path: Path, extra: dict[str, str]) -> None:
        """The optimiser's state, the fp32 masters of bf16 weights and the version (the frozen reference is the run's
        initial model, rebuilt on resume)."""
        masters = {f"master.{i}": m for i, (m, p) in enumerate(zip(self.master, self.params)) if m is not p}
        save_tensors(optimizer_tensors(self.opt) | masters, path, {"version": str(self.version), **extra})

    def load(self, path: Path) -> None:
        t = load_tensors(path)
        self.version = int(load_metadata(path)["version"])
        load_optimizer(self.opt, t)
        for i, (m, p) in enumerate(zip(self.master, self.params)):
            # the masters hold bits the rounded weights lost: a resume without them would not be exact (an fp32
            # learner resuming a bf16 one's checkpoint takes them as its weights)
            if m is not p and f"master.{i}" not in t:
                raise ValueError(f"{path}: no fp32 master `master.{i}` for the bf16 weight {tuple(p.shape)}: written by "
                                 "an fp32 learner, or before srum kept fp32 masters; resume on the device that wrote it")
            if f"master.{i}" in t:
                with torch.no_grad():
                    m.copy_(t[f"master.{i}"])
        self.policy.policy_version = self.version


def average_over_ranks(params: list[torch.Tensor], losses: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """All-reduce the gradients (one flat buffer, one call) and the loss terms, divided by the world size."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [v.detach().reshape(1) for v in losses.values()])
    dist.all_reduce(flat)
    flat /= world
    n = sum(g.numel() for g in grads)
    for p, chunk in zip(params, flat[:n].split([g.numel() for g in grads])):
        p.grad = chunk.view_as(p)
    return dict(zip(losses, flat[n:]))
