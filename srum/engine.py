"""The local engine: every stage in one process, deterministically for a seed (all randomness of step k comes from
generators seeded by (seed, k)). It is the reference the Ray engine reproduces (srum/actors/); both share the run's
lifecycle (srum/run.py) and supply only their training loop.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .config import TrainConfig
from .io import StopRun
from .run import Budget, Run
from .stages import JudgeStage, LearnerStage, RolloutStage, load_policy


class LocalEngine:
    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        self.cfg, self.log = cfg, log
        self.run_dir = Run(cfg, run_dir, log)
        self.policy = load_policy(cfg)
        # One policy object: the rollout stage samples from exactly the weights the learner updates.
        self.rollouts = RolloutStage(cfg, self.policy)
        self.learner = LearnerStage(cfg, self.policy)
        # The judge stays the initial model unless configured to follow, so the reward cannot drift.
        self.judge = JudgeStage(cfg, self.policy if cfg.learner.judge_follows else None)
        self.step = 0

    def run(self) -> dict:
        run, cfg = self.run_dir, self.cfg
        run.open()
        self.resume()
        results = {}
        if run.wants_initial_eval(self.step):
            results["initial"] = run.evaluate("initial", self.policy, self.judge.model)
        run.log_from(self.step)
        first, budget = self.step, Budget(cfg.time_budget_min)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="srum train", mininterval=2)
        while self.step < cfg.steps:
            if budget.over():
                self.log(f"time budget of {cfg.time_budget_min} min reached at step {self.step}")
                self.checkpoint()
                break
            try:
                m, rollouts, judgements = self.train_step(self.step)
                self.step += 1
                run.write_samples(self.step, rollouts, judgements)
                run.record(self.step, m, {"batch": self.step - 1, "ids": [r.id for r in rollouts]})
                run.checks(self.step, m)  # a judge failing too often, a logprob gap: the run stops (after its row)
            except StopRun as e:  # nothing from the bad state is written: no checkpoint (and no row of a bad update)
                bar.close()
                run.stopped(e, self.step)
                raise
            bar.update(1)
            if m["total"] is not None:  # None: every group of the batch held a failed judgement, nothing learned
                bar.set_postfix(g=m["global_reward"], loc=m["local_reward"], loss=round(m["total"], 4), kl=round(m["kl_term"], 5))
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.checkpoint()
        bar.close()
        train_s = budget.elapsed
        run.close()
        if cfg.eval.at_end:
            results["final"] = run.evaluate("final", self.policy, self.judge.model)
        samples = (self.step - first) * cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
        return run.finish({**results, "steps_done": self.step, "train_seconds": round(train_s, 1),
                           "samples_per_s": round(samples / max(train_s, 1e-9), 2)})

    def train_step(self, step: int) -> tuple[dict, list, list]:
        """One step of the loop, stage by stage, timed: the metrics row, the rollouts and their judgements."""
        clock = Budget(0)
        rollouts = self.rollouts.generate(step)
        t1 = clock.elapsed
        judgements = self.judge.score(rollouts)
        t2 = clock.elapsed
        m = self.learner.step(rollouts, judgements)
        t3 = clock.elapsed
        return ({"step": step + 1, **m, "rollout_s": round(t1, 3), "judge_s": round(t2 - t1, 3), "learn_s": round(t3 - t2, 3)},
                rollouts, judgements)

    # ---- checkpoints ----
    def checkpoint(self) -> None:
        # in order: nothing learned ahead of the data position (as the Ray engine's cursor writes it)
        self.learner.checkpoint(self.run_dir.dir, self.step, {"data_position": self.step * self.cfg.rollout.prompts_per_step,
                                                              "learned_ahead": []})

    def resume(self) -> None:
        state = self.learner.resume(self.run_dir.dir)
        if state is not None:
            self.step = state["step"]
            self.log(f"resumed from {state['dir']} (step {self.step}, policy version {self.learner.version})")
