"""Issue 18, a diagnostic: which way SRUM's first update points, before any step is taken.

On the initial model, for `--batches` rollout batches of the configuration (the default SRUM run's), the gradient of
the objective's reward term (`weighted_ar_loss` at lambda 0; the KL's gradient is 0 at the start) is computed with the batch's own weights and,
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
from srum.learner.objective import weighted_ar_loss
from srum.models import weights_sha256
from srum.stages import JudgeStage, LearnerStage, RolloutStage

HEAD = "model.generation_head.vision_head.weight"


def reward_gradient(policy, learner, prompts: list[str], tokens: torch.Tensor, weights: torch.Tensor) -> dict:
    """The reward term of the SRUM objective (`weighted_ar_loss`, lambda 0) on one batch: its flat parameter
    gradient, the output projection's share of that gradient's squared norm, and its logit-space direction (B, N, V)
    (minus the loss's gradient with respect to each image token's logits)."""
    logits = policy.image_logits(prompts, tokens)
    logits.retain_grad()
    with torch.no_grad():
        ref_logits = learner.reference.image_logits(prompts, tokens)
    learner.opt.zero_grad(set_to_none=True)
    weighted_ar_loss(logits, tokens, ref_logits, weights, 0.0)["reward_term"].backward()
    named = [(n, p.grad.reshape(-1)) for n, p in policy.net.named_parameters() if p.requires_grad]
    flat = torch.cat([g for _, g in named])
    head = sum(g.pow(2).sum() for n, g in named if n == HEAD) / flat.pow(2).sum()
    return {"grad": flat.clone(), "head": float(head), "logit_dir": -logits.grad.detach(), "logits": logits.detach()}


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation over every element."""
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def summarise(batches: list[dict]) -> dict:
    grads = [b["grad"] for b in batches]
    cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in itertools.combinations(grads, 2)]
    mean = lambda key: float(np.mean([b[key] for b in batches]))  # noqa: E731
    return {"grad_norm": round(float(np.mean([g.norm() for g in grads])), 4),
            "output_projection_share": round(mean("head"), 3),
            "cross_batch_cosine": round(float(np.mean(cos)), 3),
            "cross_batch_cosine_min_max": [round(min(cos), 3), round(max(cos), 3)],
            "guidance_correlation": round(mean("guidance_correlation"), 3),
            "background_code_share": round(mean("background_code_share"), 3),
            "background_code_push": round(mean("background_code_push"), 4)}


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
    found = {"configured": [], "uniform": []}
    background = None
    for b in range(args.batches):
        rollouts = rollout.generate(b)
        w = learner.token_weights(judge.score(rollouts))
        prompts, tokens = [r.prompt for r in rollouts], torch.from_numpy(np.stack([r.latent for r in rollouts])).long()
        if background is None:  # the commonest code of the first batch: the empty canvas
            background = int(torch.bincount(tokens.flatten()).argmax())
        guide = None  # classifier-free guidance's direction at these tokens: the same for both weightings
        for name, weights in (("configured", w), ("uniform", torch.ones_like(w))):
            r = reward_gradient(policy, learner, prompts, tokens, weights)
            if guide is None:
                with torch.no_grad():
                    guide = r["logits"] - policy.image_logits(prompts, tokens, drop=[True] * len(prompts))
                guide = guide - guide.mean(-1, keepdim=True)
            per_code = r["logit_dir"].sum((0, 1))
            found[name].append(r | {"guidance_correlation": correlation(r["logit_dir"], guide),
                                    "background_code_share": float(per_code[background].pow(2) / per_code.pow(2).sum()),
                                    "background_code_push": float(per_code[background] / per_code.abs().sum())})
    label = " ".join(args.sets) or "the default SRUM run"
    res = {"what": __doc__.split("\n\n")[0], "model_sha256": sha, "batches": args.batches,
           "samples_per_batch": cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt,
           "rows": old.get("rows", {}) | {label: {k: summarise(v) for k, v in found.items()}}}
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
