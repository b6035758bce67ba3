"""Stand-in stages that take fixed times without using the CPU (they sleep) and move real-sized data.

With them a run measures only srum's own orchestration, transport and weight sync: the pipeline
efficiency benchmark (bench/ray_pipeline.py) and the streaming tests use them. The same interface as the
stages of srum/stages.py, which chooses them with `ray.stages: stand_in`.
"""

from __future__ import annotations

import time

import numpy as np

from ..records import Judgement, Rollout


class StandInRollout:
    def __init__(self, cfg):
        self.cfg, self.s = cfg, cfg.ray.stand_in
        self.weights = np.zeros(int(self.s.weights_mb * 2**20 // 4), np.float32)
        self.version = 0

    def load(self, flat: np.ndarray, version: int) -> None:
        self.weights = flat  # a real generator uses the shared buffer in place, too
        self.version = version

    device = "cpu"

    def generate(self, batch: int) -> list[Rollout]:
        time.sleep(self.s.generate_s)
        if self.weights[0] != self.version:  # the learner stamps each version: the buffer changed under us
            raise RuntimeError(f"weights of version {self.version} were overwritten while generating (now {self.weights[0]:.0f})")
        n = self.cfg.rollout.prompts_per_step * self.cfg.rollout.samples_per_prompt
        img, lat = np.zeros((32, 32, 3), np.uint8), np.zeros((64, 48), np.float32)
        return [Rollout(f"{batch}-{i}", "a red square", "single", img, lat, self.version) for i in range(n)]


class StandInJudge:
    def __init__(self, cfg):
        self.s = cfg.ray.stand_in

    def score(self, rollouts: list[Rollout]) -> list[Judgement]:
        time.sleep(self.s.judge_s)
        return [Judgement(r.id, 0.0, [], np.full((32, 32), 0.5, np.float32)) for r in rollouts]

    def load(self, flat, version: int) -> None:
        pass  # a stand-in judge never follows the policy

    fallbacks = timed_out = 0


class StandInLearner:
    def __init__(self, cfg):
        self.s = cfg.ray.stand_in
        self.weights = np.zeros(int(self.s.weights_mb * 2**20 // 4), np.float32)
        self.version = 0

    def step(self, rollouts, judgements) -> dict:
        time.sleep(self.s.learn_s)
        self.version += 1
        self.weights[self.version % len(self.weights)] = self.version  # new bytes each version
        self.weights[0] = self.version  # and a stamp that generators check (no buffer may change under them)
        return {"version": self.version, "total": 0.0, "reward_term": 0.0, "kl_term": 0.0,
                "global_reward": 0.0, "local_reward": None, "map_mean": 0.5}

    def flat_weights(self) -> np.ndarray:
        return self.weights

    def weights_tensor(self):
        import torch

        return torch.from_numpy(self.weights)

    def checkpoint(self, run_dir, step: int, data: dict):
        return None  # nothing worth keeping

    def resume(self, run_dir):
        return None
