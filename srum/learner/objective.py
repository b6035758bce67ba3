"""The SRUM objective: reward-weighted generation loss on the policy's own samples + lambda * KL to a
frozen reference.

Rectified flow, per latent token n with the same (x_t, t, eps) for both terms:
    L = mean_n w_n * |v_theta - (eps - x0)|^2_n  +  lambda * mean_n |v_theta - v_ref|^2_n
(|.|^2_n is the mean over the token's channels). For autoregressive image tokens the same shape holds
with per-token NLL and the token KL of the logits (`weighted_ar_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_flow_loss(v: torch.Tensor, target: torch.Tensor, v_ref: torch.Tensor, w: torch.Tensor,
                       kl_coef: float) -> dict[str, torch.Tensor]:
    """v, target, v_ref: (B, N, D); w: (B, N) token weights."""
    reward_term = (w * (v - target).pow(2).mean(-1)).mean()
    kl_term = (v - v_ref).pow(2).mean()
    return {"total": reward_term + kl_coef * kl_term, "reward_term": reward_term, "kl_term": kl_term}


def weighted_ar_loss(logits: torch.Tensor, tokens: torch.Tensor, ref_logits: torch.Tensor, w: torch.Tensor,
                     kl_coef: float) -> dict[str, torch.Tensor]:
    """logits, ref_logits: (B, N, V); tokens: (B, N) the sampled image tokens; w: (B, N)."""
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, tokens[..., None])[..., 0]
    reward_term = (w * nll).mean()
    kl_term = F.kl_div(ref_logits.log_softmax(-1), logp, log_target=True, reduction="none").sum(-1).mean()
    return {"total": reward_term + kl_coef * kl_term, "reward_term": reward_term, "kl_term": kl_term}
