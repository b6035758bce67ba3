"""Rollout and learner agree (issue 39): at a share of learner steps (`learner.logprob_check`, chosen by seed and
version, so both engines check the same steps) the learner re-scores the image tokens a generator sampled and compares
each token's log-probability with the one the generator recorded (`Rollout.logprobs`).

The gap is the mean |recorded - re-scored| over the batch's tokens, in nats: the mean rather than the max because the
max of thousands of tokens is ruled by the rarest token's rounding (bf16 on a GPU), which would force a loose
threshold, while a generator on other weights or another prompt format shifts every token. The max is in the row
beside it (`logprob_gap_max`). fp32 on a CPU gives a mean of ~5e-9 and a max of 5e-7, a float32 ulp (the KV-cached
sampler and the teacher-forced forward only sum in another order: docs/results/reliability.md). Beyond
`learner.logprob_warn` the gap is said, beyond `learner.logprob_stop` the run stops (`srum/run.py`). bf16 on a GPU
has a small gap, not yet measured here: the defaults (0.1, 1.0 nats) are set wide of it.

"With the weights that sampled them": which batches are checked is chosen by the version that sampled them. The
learner keeps a copy of its trainable weights for each chosen version while batches of it may still arrive (up to
ray.max_staleness versions later: `Agreement`), and re-scores an older batch with that copy swapped in; a batch whose
copy is gone (sampled before a resume) is counted as not checked (`logprob_unchecked`). A flow backend (BAGEL) samples no tokens and records no log-probabilities: no check, said once
at start (the metric stays absent). It only reads: the weights, the noise and the step are what they would be
without it.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def chosen(share: float, seed: int, version: int) -> bool:
    """Whether the learner step taken at `version` is checked: a fixed share of steps, the same for a seed."""
    return share >= 1 or (share > 0 and zlib.crc32(f"{seed}:{version}".encode()) / 2**32 < share)


def checks(policy, share: float) -> str | None:
    """None when the check runs for this backend, else why not (a line for the log at start)."""
    if share <= 0:
        return None
    if getattr(policy, "objective", None) != "tokens":
        return (f"learner.logprob_check: the {getattr(policy, 'kind', '?')} backend samples no tokens and records no "
                "log-probabilities (flow); rollout and learner are not compared, srum_logprob_gap stays absent")
    return None


@torch.no_grad()
def token_logprobs(policy, prompts: list[str], tokens: torch.Tensor) -> torch.Tensor:
    """Each token's log-probability under the policy as it is now, teacher-forced as the loss scores it: (B, N)."""
    with policy.autocast():
        logits = policy.image_logits(prompts, tokens)
    return logits.float().log_softmax(-1).gather(-1, tokens.to(logits.device)[..., None])[..., 0].cpu()


class Agreement:
    """The check for one learner: `gap` before each update, on the batch as sampled. `share` 0 (another rank of a
    data-parallel group, or the check off) checks nothing; `why`: why a backend is not checked (said once at start)."""

    def __init__(self, policy, weights: torch.Tensor, share: float, seed: int, keep: int):
        self.policy, self.weights, self.seed, self.keep = policy, weights, seed, keep
        self.why = checks(policy, share)
        self.share = 0.0 if self.why is not None else share
        self.saved: dict[int, torch.Tensor] = {}  # chosen version -> its trainable weights

    def gap(self, rollouts, version: int, rows: slice = slice(None)) -> dict:
        """The row's figures for a batch learned at `version` (before its update), over its `rows`: {} when the
        version that sampled it is not chosen, {"logprob_unchecked": 1} when its weights are gone, else the gap."""
        if self.keep and chosen(self.share, self.seed, version) and version not in self.saved:
            self.saved[version] = self.weights.detach().clone()  # batches of this version may come later
        for v in [v for v in self.saved if v < version - self.keep]:
            del self.saved[v]
        if self.share <= 0:
            return {}
        rollouts = list(rollouts)[rows]
        sampled = {r.policy_version for r in rollouts}
        if len(sampled) != 1:  # (one generator call, one version: a batch of several is not compared)
            return {"logprob_unchecked": 1} if sampled else {}
        if not chosen(self.share, self.seed, at := sampled.pop()):
            return {}
        if at == version:
            return logprob_gap(self.policy, rollouts, at)
        if at not in self.saved:
            return {"logprob_unchecked": 1}  # sampled before this learner's process started (a resume)
        now = self.weights.detach().clone()
        with torch.no_grad():
            self.weights.copy_(self.saved[at])  # the weights that sampled the batch, for the read only
            try:
                return logprob_gap(self.policy, rollouts, at)
            finally:
                self.weights.copy_(now)


def logprob_gap(policy, rollouts, version: int) -> dict:
    """Recorded against re-scored log-probabilities of rollouts the policy, at `version`, is to read: the gap (mean)
    and its max, or {"logprob_unchecked": 1} when a rollout was sampled by another version or recorded none."""
    if any(r.policy_version != version or r.logprobs is None for r in rollouts):
        return {"logprob_unchecked": 1}
    recorded = torch.from_numpy(np.stack([r.logprobs for r in rollouts])).float()
    tokens = torch.from_numpy(np.stack([r.latent for r in rollouts])).long()
    diff = (token_logprobs(policy, [r.prompt for r in rollouts], tokens) - recorded).abs()
    return {"logprob_gap": float(diff.mean()), "logprob_gap_max": float(diff.max())}
