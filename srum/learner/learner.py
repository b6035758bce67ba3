"""The learner: collates scored rollouts, takes one KL-regularised reward-weighted step, versions
the policy, and saves / restores its state (safetensors, atomic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..config import LearnerConfig, RewardConfig
from ..io import (
    load_metadata,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
)
from ..records import Judgement, Rollout
from ..rewards.judge import JudgeOptions
from ..rewards.reward_map import centre, pool_to_tokens


class Learner:
    def __init__(self, policy, cfg: LearnerConfig, reward: RewardConfig, group: int = 1):
        self.policy, self.cfg, self.reward, self.group = policy, cfg, reward, group  # group: samples per prompt
        if reward.centre.startswith("prompt") and group < 2:  # a sample alone against its own mean: every weight 0
            raise ValueError(f"reward.centre {reward.centre} needs several samples per prompt (group {group})")
        # The frozen reference is the initial policy (the learner is made before a resume loads weights): the KL
        # term keeps the update near it. A backend may make it without a copy (LoRA: adapters switched off).
        self.reference = policy.make_reference()
        if cfg.reference_every and self.reference is None:
            raise ValueError("learner.reference_every needs a reference copy; with learner.train lora the reference "
                             "is the base model (adapters off), which cannot move: set reference_every 0")
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
        # fp32 master weights: the model itself is fp32 here; mixed precision would keep this copy.
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        self.version = policy.policy_version

    def token_weights(self, judgements: list[Judgement]) -> torch.Tensor:
        if self.reward.shuffle:  # the control: every sample gets another sample's map (seeded by the version)
            judgements = [judgements[i] for i in np.random.default_rng(self.version).permutation(len(judgements))]
        w = pool_to_tokens(np.stack([j.reward_map for j in judgements]), self.policy.token_grid)
        background = None
        if self.reward.centre == "prompt_global":
            opts = JudgeOptions.of(self.reward)
            background = torch.tensor([opts.background(j.global_score, j.regions, j.relation_score) for j in judgements])
        return centre(w, self.reward.centre, self.group, background)

    def step(self, batch: list[tuple[Rollout, Judgement]], generator: torch.Generator, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
        """One batch learned: `updates_per_batch` optimiser steps on it (the first on-policy, the rest reusing the
        judged samples, which cost far more to make than to learn from), one new version. shard = (rank, world): a
        data-parallel learner computes its equal share of the batch, then averages gradients (and the logged losses)
        over the process group: every rank takes the same step, the one a single learner would take on the whole batch."""
        rollouts, judgements = zip(*batch)
        latents = torch.from_numpy(np.stack([r.latent for r in rollouts]))
        w = self.token_weights(list(judgements))  # centring needs the whole batch
        rank, world = shard
        rows = slice(rank * len(batch) // world, (rank + 1) * len(batch) // world)
        prompts = [r.prompt for r in rollouts]
        passes = [self.update(latents, prompts, w, generator, rows, world) for _ in range(self.cfg.updates_per_batch)]
        self.version += 1
        self.policy.policy_version = self.version
        if self.cfg.reference_every and self.version % self.cfg.reference_every == 0:
            self.reference_net().load_state_dict(self.policy.net.state_dict())  # a new round starts here
        return {k: float(np.mean([p[k] for p in passes])) for k in passes[0]} | {"weight_mean": float(w.mean())}

    def update(self, latents, prompts, w, generator, rows, world) -> dict[str, float]:
        """One optimiser step of the weighted loss + lambda * KL on the batch's rows."""
        losses = self.policy.srum_loss(latents, prompts, w, self.reference, self.cfg.kl_coef, generator, rows,
                                       push_margin=self.cfg.push_margin)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if world > 1:
            losses = average_over_ranks(self.params, losses, world)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        return {**{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(grad_norm)}

    def reference_net(self) -> torch.nn.Module:
        return getattr(self.reference, "net", self.reference)  # janus keeps a model object, mot a bare network

    # ---- state ----
    def save(self, path: Path, extra: dict[str, str]) -> None:
        """The optimiser's state and the version; with a moving reference, its weights too (a frozen one is the
        run's initial model, which a resume rebuilds)."""
        tensors = optimizer_tensors(self.opt)
        if self.cfg.reference_every:
            tensors.update({f"reference.{k}": v for k, v in self.reference_net().state_dict().items()})
        save_tensors(tensors, path, {"version": str(self.version), **extra})

    def load(self, path: Path) -> None:
        t = load_tensors(path)
        self.version = int(load_metadata(path)["version"])
        load_optimizer(self.opt, t)
        if self.cfg.reference_every:
            ref = {k.removeprefix("reference."): v for k, v in t.items() if k.startswith("reference.")}
            if not ref:
                raise ValueError(f"{path}: learner.reference_every is set but this checkpoint holds no reference "
                                 "(it was written with a frozen one); resume with reference_every 0")
            self.reference_net().load_state_dict(ref)
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
