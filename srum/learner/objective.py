"""The SRUM objective: reward-weighted generation loss on the policy's own samples + lambda * KL to a
frozen reference.

Rectified flow, per latent token n with the same (x_t, t, eps) for both terms:
    L = mean_n w_n * |v_theta - (eps - x0)|^2_n  +  lambda * mean_n |v_theta - v_ref|^2_n
(|.|^2_n is the mean over the token's channels). For autoregressive image tokens the same shape holds
with per-token NLL and the token KL of the logits (`weighted_ar_loss`).

Negative weights (centred advantages) push a token *away* from the sample. Put on the
plain error, -|w| * |v - target|^2 has no minimum: the update blows the error up without bound (measured:
a signed map collapsed the generator to 0 %). So the push-away is bounded:
  - flow: a negatively weighted token regresses the *reflected* velocity 2 v_ref - v_theta onto the
    target (the implicit negative policy of DiffusionNFT, Zheng et al. 2025). Its minimum,
    v_theta = v_ref + (v_ref - target), moves away from the sample by as much as the reference is
    near it, and no further;
  - AR: a negatively weighted token gets the policy gradient's push, |w| * log p, clipped PPO-style
    against the frozen reference: it stops once the token is PUSH_MARGIN nats less likely than under
    the reference. Its gradient is as large as a pull's (|w| * grad log p), and it has a minimum.
    (The unlikelihood loss -log(1 - p) of Welleck et al. 2019, used before, scales its gradient by
    p / (1 - p): on a near-certain background token of a sample with a negative advantage that is a
    hundred times a pull's, and per-prompt centring collapsed the built-in with it, 0.20 -> 0.04.)
With every weight >= 0 (the paper's map) both losses are exactly the plain weighted ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PUSH_MARGIN = 1.0  # nats: how far below the reference's log-probability a pushed-away token may go (0.2, PPO's
# ratio 0.82, measured no different on the built-in: docs/findings.md)


def srum_loss(policy, reference, latents: torch.Tensor, prompts: list[str], token_weights: torch.Tensor, kl_coef: float,
              generator: torch.Generator, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    """The SRUM loss of one batch at the backend's token grid, on the batch's `rows` (a data-parallel learner's
    share). The backend gives predictions (`objective`: "tokens" gives image-token logits, "flow" velocities);
    the reference is read through `policy.reference_view` (a frozen copy, or the base with LoRA adapters off)."""
    latents, w, prompts = latents[rows], token_weights[rows].to(policy.device), list(prompts[rows])
    if policy.objective == "flow":
        x_t, t, target = policy.flow_inputs(latents, generator)
        with policy.autocast():
            v = policy.velocity(x_t, t, prompts)
            with torch.no_grad(), policy.reference_view(reference) as ref:
                v_ref = ref.velocity(x_t, t, prompts)
        return weighted_flow_loss(v.float(), target, v_ref.float(), w, kl_coef)
    tokens = latents.long()
    with policy.autocast():
        logits = policy.image_logits(prompts, tokens)
        with torch.no_grad(), policy.reference_view(reference) as ref:
            ref_logits = ref.image_logits(prompts, tokens)
    return weighted_ar_loss(logits, tokens.to(policy.device), ref_logits, w, kl_coef)


def weighted_flow_loss(v: torch.Tensor, target: torch.Tensor, v_ref: torch.Tensor, w: torch.Tensor,
                       kl_coef: float) -> dict[str, torch.Tensor]:
    """v, target, v_ref: (B, N, D); w: (B, N) token weights, any sign."""
    pull = w.clamp(min=0) * (v - target).pow(2).mean(-1)
    push = (-w).clamp(min=0) * (2 * v_ref - v - target).pow(2).mean(-1)
    reward_term = (pull + push).mean()
    kl_term = (v - v_ref).pow(2).mean()
    return {"total": reward_term + kl_coef * kl_term, "reward_term": reward_term, "kl_term": kl_term}


def weighted_ar_loss(logits: torch.Tensor, tokens: torch.Tensor, ref_logits: torch.Tensor, w: torch.Tensor,
                     kl_coef: float, push_margin: float = PUSH_MARGIN) -> dict[str, torch.Tensor]:
    """logits, ref_logits: (B, N, V); tokens: (B, N) the sampled image tokens; w: (B, N), any sign."""
    logp, ref_logp = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    token_logp = logp.gather(-1, tokens[..., None])[..., 0]
    floor = ref_logp.gather(-1, tokens[..., None])[..., 0].detach() - push_margin
    push = (token_logp - floor).clamp(min=0)  # >= 0; no gradient once the token is push_margin below the reference
    reward_term = (w.clamp(min=0) * -token_logp + (-w).clamp(min=0) * push).mean()
    kl_term = F.kl_div(ref_logp, logp, log_target=True, reduction="none").sum(-1).mean()
    return {"total": reward_term + kl_coef * kl_term, "reward_term": reward_term, "kl_term": kl_term}
