"""Issue 18, a diagnostic: which way SRUM's first update points, before any step is taken.

On the initial model, for `--batches` rollout batches of the configuration (the default SRUM run's), the gradient of
the reward term (the weighted NLL; the KL's gradient is 0 at the start) is computed with the batch's own weights and,
on the same samples, with every weight 1 (the `uniform` control: self-imitation alone, whose gradient has mean 0 on
the model's own samples). For each: the gradient's norm, how much of it is the generation head's output projection,
the mean cosine between the gradients of different batches (1: every batch says the same; about 0: noise), and in
logit space (the gradient of the weighted log-likelihood with respect to each image token's logits,
w_n * (onehot(x_n) - p_n)) its correlation with classifier-free guidance's direction at the same tokens
(cond - uncond logits, centred per token), and the share it puts on the background code. Prints JSON; writes
docs/results/gradient_probe.json (kept for the same weights).

    python bench/gradient_probe.py [--batches 4] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from _previous import previous
from srum.config import TrainConfig, load_config
from srum.models import weights_sha256
from srum.stages import JudgeStage, LearnerStage, RolloutStage

HEAD = "model.generation_head.vision_head.weight"


def reward_gradient(policy, learner, rollouts, weights: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(flat parameter gradient of the weighted NLL, the output projection's share of its squared norm, the
    logit-space gradient (B, N, V) of the weighted log-likelihood)."""
    tokens = torch.from_numpy(np.stack([r.latent for r in rollouts])).long()
    logits = policy.image_logits([r.prompt for r in rollouts], tokens)
    logits.retain_grad()
    nll = -logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    learner.opt.zero_grad(set_to_none=True)
    (weights * nll).mean().backward()
    names = [n for n, p in policy.net.named_parameters() if p.requires_grad]
    grads = [p.grad.reshape(-1) for p in learner.params]
    flat = torch.cat(grads)
    head = grads[names.index(HEAD)].pow(2).sum() / flat.pow(2).sum() if HEAD in names else torch.tensor(float("nan"))
    return flat.clone(), float(head), -logits.grad.detach()


def guidance_correlation(policy, rollouts, logit_grad: torch.Tensor) -> float:
    """Pearson correlation over every (token, code) of the logit-space gradient and cond - uncond logits."""
    tokens = torch.from_numpy(np.stack([r.latent for r in rollouts])).long()
    prompts = [r.prompt for r in rollouts]
    with torch.no_grad():
        guide = policy.image_logits(prompts, tokens) - policy.image_logits(prompts, tokens, drop=[True] * len(prompts))
    guide = guide - guide.mean(-1, keepdim=True)
    a, b = logit_grad.flatten(), guide.flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def summarise(grads: list[torch.Tensor], heads: list[float], corr: list[float], bg_share: list[float], bg_sign: list[float]) -> dict:
    cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in itertools.combinations(grads, 2)]
    return {"grad_norm": round(float(np.mean([g.norm() for g in grads])), 4),
            "output_projection_share": round(float(np.mean(heads)), 3),
            "cross_batch_cosine": round(float(np.mean(cos)), 3),
            "cross_batch_cosine_min_max": [round(min(cos), 3), round(max(cos), 3)],
            "guidance_correlation": round(float(np.mean(corr)), 3),
            "background_code_share": round(float(np.mean(bg_share)), 3),
            "background_code_push": round(float(np.mean(bg_sign)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("configs/srum-compworld.yaml"))
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "results" / "gradient_probe.json")
    args = ap.parse_args()
    cfg = load_config(TrainConfig, args.config, args.sets)
    sha = weights_sha256(cfg.model)[:12]
    old = previous(args.out, model_sha256=sha)
    stage = LearnerStage(cfg)
    policy, learner = stage.policy, stage.learner
    rollout, judge = RolloutStage(cfg, policy), JudgeStage(cfg)
    found = {k: ([], [], [], [], []) for k in ("configured", "uniform")}
    background = None
    for b in range(args.batches):
        rollouts = rollout.generate(b)
        w = learner.token_weights(judge.score(rollouts))
        if background is None:  # the commonest code of the first batch: the empty canvas
            background = int(np.bincount(np.concatenate([r.latent for r in rollouts]).astype(np.int64)).argmax())
        for name, weights in (("configured", w), ("uniform", torch.ones_like(w))):
            flat, head, logit_grad = reward_gradient(policy, learner, rollouts, weights)
            per_code = logit_grad.sum((0, 1))
            for lst, v in zip(found[name], (flat, head, guidance_correlation(policy, rollouts, logit_grad),
                                            float(per_code[background].pow(2) / per_code.pow(2).sum()),
                                            float(per_code[background] / per_code.abs().sum()))):
                lst.append(v)
    label = " ".join(args.sets) or "the default SRUM run"
    res = {"what": __doc__.split("\n\n")[0], "model_sha256": sha, "batches": args.batches,
           "samples_per_batch": cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt,
           "rows": old.get("rows", {}) | {label: {k: summarise(*v) for k, v in found.items()}}}
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
