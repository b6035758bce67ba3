"""The three stages of the loop, as plain objects that both engines run: the local engine calls them
in one process, the Ray engine wraps each in an actor (srum/actors/). There is one implementation of
the algorithm; the engines differ only in how they move batches and weights between stages.

    RolloutStage.generate(batch) -> [Rollout]          prompts of batch `batch`, seeded by (seed, batch)
    JudgeStage.score([Rollout]) -> [Judgement]         global + local self-reward and the reward map
    LearnerStage.step([Rollout], [Judgement]) -> dict  one KL-regularised reward-weighted update
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .config import RewardConfig, TrainConfig
from .io import write_json, write_text
from .learner.learner import Learner
from .models import SampleOptions, load_model
from .records import Judgement, Rollout
from .rewards.judge import JudgeOptions, SelfJudge
from .rewards.proposals import ComponentProposer, GridProposer, load_proposer
from .rollout.sources import prompt_source


def make_proposer(r: RewardConfig):
    if r.proposer == "components":
        return ComponentProposer(r.min_area, r.max_regions)
    if r.proposer == "grid":
        return GridProposer(r.grid_cells)
    return load_proposer(r.proposer)


def make_judge(model, r: RewardConfig) -> SelfJudge:
    opts = JudgeOptions(r.map == "signed", r.use_global, r.use_local, r.binarize, r.match, r.unmatched)
    return SelfJudge(model, make_proposer(r), opts)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


def load_weights(model, flat, version: int, share: bool = False) -> None:
    """Load a flat float32 buffer (a numpy array straight from the object store, read-only and
    zero-copy) into `model`: copied into its parameters, or with share=True used in place (the
    parameters become views of the shared buffer: no copy at all, for inference-only replicas)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": it is only ever read
        model.load_flat_weights(torch.as_tensor(flat), version, share)


class RolloutStage:
    """The generator: draws `samples_per_prompt` images for each prompt of a batch."""

    def __init__(self, cfg: TrainConfig, policy=None):
        self.cfg, self.policy = cfg, policy if policy is not None else load_model(cfg.model, cfg.device)
        self.source = prompt_source(cfg.rollout.prompts, cfg.seed)

    def generate(self, batch: int) -> list[Rollout]:
        r = self.cfg.rollout
        specs = self.source.take(batch * r.prompts_per_step, r.prompts_per_step)
        opts = SampleOptions(steps=r.sampling.steps, cfg_scale=r.sampling.cfg_scale, eta=r.sampling.eta)
        seed = (self.cfg.seed * 1_000_003 + batch) % 2**62
        return self.policy.generate([sp.prompt for sp in specs], r.samples_per_prompt, seed, opts)


class JudgeStage:
    """The model's own understanding head, judging rollouts globally and per region."""

    def __init__(self, cfg: TrainConfig, model=None):
        self.judge = make_judge(model if model is not None else load_model(cfg.model, cfg.device), cfg.reward)

    @property
    def model(self):
        return self.judge.model

    def score(self, rollouts: list[Rollout]) -> list[Judgement]:
        return self.judge.judge(rollouts)


def reward_metrics(judgements: list[Judgement]) -> dict:
    regions = [reg.score for j in judgements for reg in j.regions]
    return {"global_reward": round(float(np.mean([j.global_score for j in judgements])), 4),
            "local_reward": round(float(np.mean(regions)), 4) if regions else None,
            "map_mean": round(float(np.mean([j.reward_map.mean() for j in judgements])), 4)}


class LearnerStage:
    """The policy being trained, its frozen reference and optimiser; the k-th update draws its noise
    from (seed, k), so an update depends only on the batch and the step count."""

    def __init__(self, cfg: TrainConfig, policy=None, shard: tuple[int, int] = (0, 1)):
        self.cfg, self.shard = cfg, shard  # (rank, world) of a data-parallel learner group
        self.policy = policy if policy is not None else load_model(cfg.model, cfg.device)
        self.learner = Learner(self.policy, cfg.learner, cfg.reward)

    @property
    def version(self) -> int:
        return self.learner.version

    def step(self, rollouts: list[Rollout], judgements: list[Judgement]) -> dict:
        noise = step_generator(self.cfg.seed, self.learner.version, 1)
        m = self.learner.step(list(zip(rollouts, judgements)), noise, self.shard)
        return {"version": self.learner.version, **{k: round(v, 6) for k, v in m.items()}, **reward_metrics(judgements)}

    def flat_weights(self) -> np.ndarray:
        """The live weights (no copy): serialise it (return it from an actor call, ray.put) before the next step."""
        return self.learner.weights_buffer.cpu().numpy()  # on a GPU: the one device-to-host copy

    def weights_tensor(self) -> torch.Tensor:
        """The live weights buffer itself, on the learner's device (what a broadcast sends)."""
        return self.learner.weights_buffer

    # ---- checkpoints: model + optimiser + reference + data position + version (RNG derives from (seed, step)) ----
    def checkpoint(self, run_dir: Path, step: int, data_position: int) -> Path:
        d = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
        self.policy.save(d / "model")
        self.learner.save(d / "learner.safetensors", {"step": str(step)})
        write_json(d / "state.json", {"step": step, "policy_version": self.learner.version, "data_position": data_position,
                                      "rng": {"seed": self.cfg.seed, "derived_from": "(seed, step)"}})
        write_text(Path(run_dir) / "checkpoints" / "latest", d.name + "\n")
        return d

    def resume(self, run_dir: Path) -> dict | None:
        """Restore the newest checkpoint of `run_dir`; returns its state.json, or None if there is none."""
        d = latest_checkpoint(run_dir)
        if d is None:
            return None
        self.policy.net.load_state_dict(load_model(d / "model").net.state_dict())
        self.learner.load(d / "learner.safetensors")
        return {**json.loads((d / "state.json").read_text()), "dir": str(d)}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint directory of a run (what `checkpoints/latest` names), or None."""
    latest = Path(run_dir) / "checkpoints" / "latest"
    return latest.parent / latest.read_text().strip() if latest.exists() else None
