"""The online SRUM loop: prompts -> rollout -> judge -> reward map -> learner -> weights -> rollout.

The local engine runs every stage in one process, deterministically for a seed: all randomness of
step k comes from generators seeded by (seed, k). It is the reference the Ray engine reproduces.
Run directory: config.yaml, metrics.jsonl, checkpoints/step_N/, samples/step_N.png, eval/*/report.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import rundir
from .config import TrainConfig, dump_config
from .evaluate import run_eval
from .io import open_log, write_json, write_text
from .samples import write_grid
from .stages import JudgeStage, LearnerStage, RolloutStage, load_policy
from .trackers import Trackers
from .world import heldout_set


class LocalEngine:
    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        self.cfg, self.dir, self.log = cfg, Path(run_dir), log
        self.policy = load_policy(cfg)
        # One policy object: the rollout stage samples from exactly the weights the learner updates.
        self.rollouts = RolloutStage(cfg, self.policy)
        self.learner_stage = LearnerStage(cfg, self.policy)
        self.learner = self.learner_stage.learner
        # The judge stays the initial model unless configured to follow, so the reward cannot drift.
        self.judge = JudgeStage(cfg, self.policy if cfg.learner.judge_follows else None)
        self.step = 0

    # ---- one step of the loop, stage by stage ----
    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        rollouts = self.rollouts.generate(step)
        t1 = time.perf_counter()
        judgements = self.judge.score(rollouts)
        t2 = time.perf_counter()
        m = self.learner_stage.step(rollouts, judgements)
        t3 = time.perf_counter()
        return {"step": step + 1, **m, "rollout_s": round(t1 - t0, 3), "judge_s": round(t2 - t1, 3),
                "learn_s": round(t3 - t2, 3), "_samples": (rollouts, judgements)}

    # ---- the run ----
    def run(self) -> dict:
        rundir.prepare(self.dir, self.cfg)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "config.yaml", dump_config(self.cfg))
        self.resume()
        results = {}
        if self.cfg.eval.at_start and self.step == 0 and not (self.dir / "eval" / "initial" / "report.json").exists():
            results["initial"] = self.evaluate("initial")
        metrics, ledger = open_log(self.dir / "metrics.jsonl", self.step), open_log(self.dir / "ledger.jsonl", self.step)
        lg = self.cfg.logging
        trackers = Trackers(lg.trackers, self.dir, self.cfg.model_dump(mode="json"), lg.project, lg.wandb_mode, lg.mlflow_uri)
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="srum train", mininterval=2)
        first = self.step
        t_start, budget = time.perf_counter(), 60 * self.cfg.time_budget_min
        while self.step < self.cfg.steps:
            if budget and time.perf_counter() - t_start > budget:
                self.log(f"time budget of {self.cfg.time_budget_min} min reached at step {self.step}")
                self.checkpoint()
                break
            m = self.train_step(self.step)
            samples = m.pop("_samples")
            self.step += 1
            ledger.write(json.dumps({"step": self.step, "batch": self.step - 1, "ids": [r.id for r in samples[0]]}) + "\n")
            metrics.write(json.dumps(m) + "\n")
            ledger.flush(), metrics.flush()
            trackers.log(self.step, m)
            bar.update(1)
            bar.set_postfix(g=m["global_reward"], loc=m["local_reward"], loss=round(m["total"], 4), kl=round(m["kl_term"], 5))
            if self.step % self.cfg.sample_every == 0 or self.step == self.cfg.steps:
                grid = self.dir / "samples" / f"step_{self.step:06d}.png"
                write_grid(grid, *samples, signed=self.cfg.reward.map == "signed")
                trackers.image(self.step, "samples", grid, f"step {self.step}: image | reward map | prompt, judge, oracle")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.checkpoint()
        bar.close()
        metrics.close(), ledger.close()
        train_s = time.perf_counter() - t_start
        if self.cfg.eval.at_end:
            results["final"] = self.evaluate("final")
        for name, rep in results.items():
            trackers.log(self.step, {f"eval_{name}/{k}": v for k, v in rep.items() if k in ("overall", "judge_mean_global")})
        trackers.close()
        samples = (self.step - first) * self.cfg.rollout.prompts_per_step * self.cfg.rollout.samples_per_prompt
        results = {**eval_reports(self.dir), **results, "steps_done": self.step,
                   "train_seconds": round(train_s, 1), "samples_per_s": round(samples / max(train_s, 1e-9), 2),
                   "torch_threads": torch.get_num_threads()}  # what the samples/s and the budget ran on
        write_json(self.dir / "results.json", results)
        return results

    def evaluate(self, name: str) -> dict:
        return evaluate(self.cfg, self.dir, name, self.policy, self.judge.model, self.log)

    # ---- checkpoints ----
    def checkpoint(self) -> None:
        self.learner_stage.checkpoint(self.dir, self.step, {"data_position": self.step * self.cfg.rollout.prompts_per_step,
                                                                  "learned_ahead": []})  # in order: nothing ahead (as the Ray cursor writes)

    def resume(self) -> None:
        state = self.learner_stage.resume(self.dir)
        if state is not None:
            self.step = state["step"]
            self.log(f"resumed from {state['dir']} (step {self.step}, policy version {self.learner.version})")


def evaluate(cfg: TrainConfig, run_dir: Path, name: str, policy, judge_model, log=print) -> dict:
    """CompWorld-Bench of `policy` on the held-out set, with the judge's mean global score beside it."""
    e = cfg.eval
    report = run_eval(policy, heldout_set()[: e.prompts], e.images_per_prompt, Path(run_dir) / "eval" / name,
                      e.seed, e.sampling.options(), save_images=True, judge_model=judge_model)
    log(f"eval {name}: CompWorld-Bench {report['overall']:.4f}, judge mean global {report['judge_mean_global']:.4f}")
    return report


def eval_reports(run_dir: Path) -> dict:
    out = {}
    for name in ("initial", "final"):
        f = Path(run_dir) / "eval" / name / "report.json"
        if f.exists():
            out[name] = json.loads(f.read_text())
    return out
