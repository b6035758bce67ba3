"""The records that flow through the loop: prompts -> Rollout -> Judgement -> learner."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Rollout:
    id: str
    prompt: str
    category: str
    image: np.ndarray  # uint8 H x W x 3
    latent: np.ndarray  # what the learner re-scores: flow = clean latent; AR = image tokens
    policy_version: int = 0
    objects: tuple[str, ...] = ()  # the object phrases the local judge checks (empty: taken from the prompt)
    # AR: each sampled token's log-probability as the generator computed it (float32, like latent), which the learner
    # re-computes at a sampled share of batches (learner.logprob_check); None for a flow model
    logprobs: np.ndarray | None = None


@dataclass
class Region:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    label: str  # the object phrase it was judged against
    score: float  # in [-1, 1]


@dataclass
class Judgement:
    rollout_id: str
    global_score: float  # in [-1, 1]
    regions: list[Region] = field(default_factory=list)
    reward_map: np.ndarray | None = None  # float32 H x W
    relation_score: float | None = None  # in [-1, 1]: the prompt's relations read off the recognised regions; None: none read
    failed: str | None = None  # why the judge could not score it (unparsed answer, judge error): never learned from
