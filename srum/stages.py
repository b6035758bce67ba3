"""The three stages of the loop, as plain objects that both engines run: the local engine calls them
in one process, the Ray engine wraps each in an actor (srum/actors/). There is one implementation of
the algorithm; the engines differ only in how they move batches and weights between stages.

    RolloutStage.generate(batch) -> [Rollout]          prompts of batch `batch`, seeded by (seed, batch)
    JudgeStage.score([Rollout]) -> [Judgement]         global + local self-reward and the reward map
    LearnerStage.step([Rollout], [Judgement]) -> dict  one KL-regularised reward-weighted update
    load(flat, version) on the first two: the weights a learner published

`rollout_stage`, `judge_stage` and `learner_stage` choose these or their stand-ins (`ray.stages: stand_in`,
srum/testing/stand_in.py), which keep the same interface, so an actor never asks which it holds.
"""

from __future__ import annotations

import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .config import RewardConfig, TrainConfig
from .learner.agreement import Agreement
from .learner.learner import Learner
from .models import SampleOptions, load_model
from .models.synced import flat_digest, wire_array
from .records import Judgement, Rollout
from .rewards.judge import JudgeOptions, SelfJudge, TextModeJudge
from .rewards.oracle_judge import OracleJudge
from .rewards.proposals import (
    ComponentProposer,
    DetectorProposer,
    GridProposer,
    load_proposer,
)
from .rollout.draw import draw_rollouts
from .rollout.sources import prompt_source
from .learner.checkpoints import read_checkpoint, write_checkpoint
from .testing import stand_in
from .testing.faults import fault_fires, fault_value, hang


def make_proposer(r: RewardConfig, device: str = "cpu"):
    if r.proposer == "components":
        return ComponentProposer(r.min_area, r.max_regions)
    if r.proposer == "grid":
        return GridProposer(r.grid_cells)
    if r.proposer.startswith("detector:"):
        return DetectorProposer(r.proposer.split(":", 1)[1], r.detector_threshold, r.max_regions, device)
    return load_proposer(r.proposer)


def make_judge(model, r: RewardConfig, device: str = "cpu"):
    """SelfJudge (yes/no, from any model with judge_yes_prob: the policy's understanding, or vLLM's), the text
    judge (reward.judge.mode text: "Score: x" parsed from what a vLLM judge writes), or the oracle (a diagnostic:
    `model` then only answers the evaluations' judge questions)."""
    opts = JudgeOptions.of(r)
    if r.judge.engine == "oracle":
        return OracleJudge(model, opts)
    if r.judge.mode == "text":
        return TextModeJudge(model, make_proposer(r, device), opts, r.judge.retries)
    return SelfJudge(model, make_proposer(r, device), opts)


def vllm_judge(cfg: TrainConfig):
    from .models import resolve_device
    from .rewards.vllm_judge import VllmJudge

    j = cfg.reward.judge
    return VllmJudge(j.model, j.question, j.yes, j.no, j.kv_cache_mb, j.max_model_len, resolve_device(cfg.device))


def load_policy(cfg: TrainConfig, name=None):
    """The model a stage computes with, shaped for training as configured: with learner.train=lora the LoRA
    adapters are added here, so learner, generators and a following judge agree on the weights they sync."""
    model = load_model(name or cfg.model, cfg.device)
    if cfg.learner.train == "lora" and getattr(model, "peft", None) is None:
        if not hasattr(model, "add_lora"):
            raise ValueError(f"learner.train lora: the {model.kind} backend has no LoRA support")
        lo = cfg.learner.lora
        model.add_lora(lo.rank, lo.alpha, lo.targets)
    return model


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


def load_weights(model, flat, version: int, share: bool = False) -> None:
    """Load a flat buffer (a numpy array straight from the object store or the ring, read-only and zero-copy;
    a torch view of it for a dtype numpy lacks, bf16) into `model`: copied into its parameters, or with
    share=True used in place (the parameters become views of the shared buffer: no copy at all, for
    inference-only replicas)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": it is only ever read
        model.load_flat_weights(torch.as_tensor(flat), version, share)


class RolloutStage:
    """The generator: draws `samples_per_prompt` images for each prompt of a batch."""

    def __init__(self, cfg: TrainConfig, policy=None):
        self.cfg, self.policy = cfg, policy if policy is not None else load_policy(cfg)
        self.source = prompt_source(cfg.rollout.prompts, cfg.seed, cfg.rollout.scenes)

    @property
    def device(self) -> str:
        return str(self.policy.device)

    def load(self, flat, version: int) -> None:
        """Generators only read their weights: the published buffer is used in place, no copy."""
        load_weights(self.policy, flat, version, share=True)
        if fault_fires("corrupt_weights", version):  # fault injection: other weights than the published ones
            p = self.policy.synced[0]
            p.data = p.data.clone()  # (the published buffer itself is read-only and shared)
            p.data.view(-1)[0] += 1.0

    def weights_digest(self) -> tuple[float, ...]:
        """The digest of the weights this generator samples with (issue 39: checked against the published one)."""
        return self.policy.weights_digest()

    def generate(self, batch: int) -> list[Rollout]:
        r = self.cfg.rollout
        items = self.source.take(batch * r.prompts_per_step, r.prompts_per_step)
        seed = (self.cfg.seed * 1_000_003 + batch) % 2**62
        rollouts = draw_rollouts(self.policy, [it.prompt for it in items], r.samples_per_prompt, seed,
                                 SampleOptions.of(r.sampling), [it.category for it in items], [it.objects for it in items],
                                 logprobs=self.cfg.learner.logprob_check > 0)  # recorded only for the check (issue 39)
        drift = fault_value("logprob_drift")  # fault injection: recorded log-probabilities off by batch x drift/100 nats
        for i, ro in enumerate(rollouts):  # ids name the batch and the sample: unique across the run
            ro.id = f"b{batch}-{i}"
            if drift and ro.logprobs is not None:
                ro.logprobs = ro.logprobs - batch * drift / 100
        return rollouts


class JudgeStage:
    """The model's own understanding head, judging rollouts globally and per region."""

    def __init__(self, cfg: TrainConfig, model=None):
        if model is None and cfg.reward.judge.engine == "vllm":
            model = vllm_judge(cfg)
        elif model is None:  # the initial model; a judge that follows the policy loads its weights as it goes
            model = load_policy(cfg) if cfg.learner.judge_follows else load_model(cfg.model, cfg.device)
        self.cfg, self.judge = cfg, make_judge(model, cfg.reward, str(getattr(model, "device", "cpu")))
        self.calls = self.timed_out = 0  # calls made, and of them those past reward.judge.timeout_s

    @property
    def model(self):
        return self.judge.model

    @property
    def fallbacks(self) -> int:
        """Text-judge answers that fell back to neutral after their retries (0 for yes/no judges)."""
        return getattr(self.judge, "fallbacks", 0)

    def score(self, rollouts: list[Rollout]) -> list[Judgement]:
        """Judgements, a failed one (`failed` set: unparsed, a vLLM error, the call past reward.judge.timeout_s)
        where the judge could not score."""
        self.calls += 1
        judge = hang if fault_fires("judge_hang", self.calls) else self.judge.judge  # fault injection: never returns
        limit = self.cfg.reward.judge.timeout_s
        try:
            out = within(limit, judge, rollouts)
        except TimeoutError:  # a hung judge cannot be interrupted: its call is left behind (a Ray judge is replaced)
            self.timed_out += 1
            return [Judgement(r.id, 0.0, failed=f"the judge call ran past reward.judge.timeout_s ({limit:g} s)")
                    for r in rollouts]
        except Exception as e:  # noqa: BLE001 - a served judge's error fails the batch's samples, counted, never a 0
            if self.cfg.reward.judge.engine != "vllm":
                raise  # srum's own torch judge failing is a bug, not a judge's answer
            out = [Judgement(r.id, 0.0, failed=f"judge error: {type(e).__name__}: {str(e)[:200]}") for r in rollouts]
        pct = fault_value("judge_fail")  # fault injection: this share of samples (by id, in percent) fails
        if pct:
            out = [Judgement(j.rollout_id, 0.0, failed="injected (SRUM_FAULT judge_fail)")
                   if zlib.crc32(j.rollout_id.encode()) % 100 < pct else j for j in out]
        return out

    def load(self, flat, version: int) -> None:
        """A judge that follows the policy (learner.judge_follows) reads each published version."""
        load_weights(self.model, flat, version)


def within(seconds: float, fn, *args):
    """fn(*args) in a daemon thread, or TimeoutError once `seconds` pass with it still running (left behind: Python
    cannot stop a thread; a daemon one does not hold the process open at exit)."""
    box: dict = {}

    def call():
        try:
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e

    t = threading.Thread(target=call, name="srum-judge-call", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"still running after {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["out"]


def drop_failed(rollouts: list[Rollout], judgements: list[Judgement], group: int) -> tuple[list, list, int]:
    """The batch without the groups that hold a failed judgement, and how many samples failed. Whole groups go:
    per-prompt centring (reward.centre prompt) compares each sample with its prompt's other samples, so a group
    with a sample missing would be centred on the wrong mean (and the learner's groups would no longer line up)."""
    bad = {i // group for i, j in enumerate(judgements) if j.failed is not None}
    if not bad:
        return list(rollouts), list(judgements), 0
    keep = [i for i in range(len(judgements)) if i // group not in bad]
    return [rollouts[i] for i in keep], [judgements[i] for i in keep], sum(j.failed is not None for j in judgements)


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
        self.policy = policy if policy is not None else load_policy(cfg)
        self.learner = Learner(self.policy, cfg.learner, cfg.reward, cfg.rollout.samples_per_prompt)
        self.agreement = Agreement(self.policy, self.learner.weights_buffer, cfg.learner.logprob_check if shard[0] == 0 else 0,
                                   cfg.seed, cfg.ray.max_staleness if cfg.engine == "ray" else 0)
        if self.agreement.why:
            print(f"srum: {self.agreement.why}", flush=True)  # said, not silently skipped (issue 39)

    @property
    def version(self) -> int:
        return self.learner.version

    def step(self, rollouts: list[Rollout], judgements: list[Judgement]) -> dict:
        n, world = len(rollouts), self.shard[1]
        # rollout and learner agree (issue 39): read-only, on the batch as sampled (rank 0 checks its share; other ranks none)
        agree = self.agreement.gap(rollouts, self.learner.version, slice(0, n // world))
        rollouts, judgements, failures = drop_failed(rollouts, judgements, self.cfg.rollout.samples_per_prompt)
        counts = {"judge_samples": n, "judge_failures": failures, "judge_dropped": n - len(rollouts)}  # dropped: failed groups
        if not rollouts:  # every group had a failed sample: no update, no new version; the step is counted
            return {"version": self.learner.version, "skipped": True, **counts, **agree,
                    **dict.fromkeys(("total", "reward_term", "kl_term", "grad_norm", "global_reward", "local_reward",
                                     "map_mean"))}
        noise = step_generator(self.cfg.seed, self.learner.version, 1)
        m = self.learner.step(list(zip(rollouts, judgements)), noise, self.shard)
        return {"version": self.learner.version, **{k: round(v, 6) for k, v in m.items()}, **reward_metrics(judgements), **counts,
                **agree}

    def flat_weights(self) -> np.ndarray:
        """The live weights (no copy): serialise it (return it from an actor call, ray.put) before the next step."""
        return wire_array(self.learner.weights_buffer)  # on a GPU: the one device-to-host copy; bf16 as its int16 bits

    def weights_digest(self) -> tuple[float, ...]:
        """The digest of the weights as published now (`flat_digest` of the flat buffer)."""
        return flat_digest(self.learner.weights_buffer)

    def weights_tensor(self) -> torch.Tensor:
        """The live weights buffer itself, on the learner's device (what a broadcast sends)."""
        return self.learner.weights_buffer

    # ---- checkpoints: model + optimiser + version + data position (srum/learner/checkpoints.py) ----
    def checkpoint(self, run_dir: Path, step: int, data: dict) -> Path:
        return write_checkpoint(run_dir, step, self.policy, self.learner, data, self.cfg.seed)

    def resume(self, run_dir: Path) -> dict | None:
        return read_checkpoint(run_dir, self.policy, self.learner)


def rollout_stage(cfg: TrainConfig):
    return stand_in.StandInRollout(cfg) if cfg.ray.stages == "stand_in" else RolloutStage(cfg)


def judge_stage(cfg: TrainConfig):
    return stand_in.StandInJudge(cfg) if cfg.ray.stages == "stand_in" else JudgeStage(cfg)


def learner_stage(cfg: TrainConfig, shard: tuple[int, int] = (0, 1)):
    return stand_in.StandInLearner(cfg) if cfg.ray.stages == "stand_in" else LearnerStage(cfg, shard=shard)
