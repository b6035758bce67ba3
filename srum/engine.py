"""The online SRUM loop: prompts -> rollout -> judge -> reward map -> learner -> weights -> rollout.

The local engine runs every stage in one process, deterministically for a seed: all randomness of
step k comes from generators seeded by (seed, k). It is the reference the Ray engine reproduces.
Run directory: config.yaml, metrics.jsonl, checkpoints/step_N/, samples/step_N.png, eval/*/report.json.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .config import RewardConfig, TrainConfig, dump_config
from .evaluate import run_eval
from .io import write_json, write_text
from .learner.learner import Learner
from .models import SampleOptions, load_model
from .rewards.judge import JudgeOptions, SelfJudge
from .rewards.proposals import ComponentProposer, GridProposer, load_proposer
from .rollout.sources import prompt_source
from .world import heldout_set

EVAL_SAMPLING = SampleOptions(steps=20, cfg_scale=3.0)


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


class LocalEngine:
    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        self.cfg, self.dir, self.log = cfg, Path(run_dir), log
        self.policy = load_model(cfg.model)
        # The judge stays the initial model unless configured to follow, so the reward cannot drift.
        judge_model = self.policy if cfg.learner.judge_follows else copy.deepcopy(self.policy)
        self.judge = make_judge(judge_model, cfg.reward)
        self.learner = Learner(self.policy, cfg.learner, cfg.reward)
        self.source = prompt_source(cfg.rollout.prompts, cfg.seed)
        self.step = 0

    # ---- one step of the loop, stage by stage ----
    def rollout(self, step: int):
        r = self.cfg.rollout
        specs = self.source.take(step * r.prompts_per_step, r.prompts_per_step)
        s = r.sampling
        opts = SampleOptions(steps=s.steps, cfg_scale=s.cfg_scale, eta=s.eta)
        seed = (self.cfg.seed * 1_000_003 + step) % 2**62
        return self.policy.generate([sp.prompt for sp in specs], r.samples_per_prompt, seed, opts)

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        rollouts = self.rollout(step)
        t1 = time.perf_counter()
        judgements = self.judge.judge(rollouts)
        t2 = time.perf_counter()
        m = self.learner.step(list(zip(rollouts, judgements)), step_generator(self.cfg.seed, step, 1))
        t3 = time.perf_counter()
        regions = [reg.score for j in judgements for reg in j.regions]
        return {"step": step + 1, "version": self.learner.version, **{k: round(v, 6) for k, v in m.items()},
                "global_reward": round(float(np.mean([j.global_score for j in judgements])), 4),
                "local_reward": round(float(np.mean(regions)), 4) if regions else None,
                "map_mean": round(float(np.mean([j.reward_map.mean() for j in judgements])), 4),
                "rollout_s": round(t1 - t0, 3), "judge_s": round(t2 - t1, 3), "learn_s": round(t3 - t2, 3),
                "_samples": (rollouts, judgements)}

    # ---- the run ----
    def run(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "config.yaml", dump_config(self.cfg))
        self.resume()
        results = {}
        if self.cfg.eval.at_start and self.step == 0 and not (self.dir / "eval" / "initial" / "report.json").exists():
            results["initial"] = self.evaluate("initial")
        metrics = (self.dir / "metrics.jsonl").open("a")
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="srum train", mininterval=2)
        t_start, budget = time.perf_counter(), 60 * self.cfg.time_budget_min
        while self.step < self.cfg.steps:
            if budget and time.perf_counter() - t_start > budget:
                self.log(f"time budget of {self.cfg.time_budget_min} min reached at step {self.step}")
                self.checkpoint()
                break
            m = self.train_step(self.step)
            samples = m.pop("_samples")
            self.step += 1
            metrics.write(json.dumps(m) + "\n")
            metrics.flush()
            bar.update(1)
            bar.set_postfix(g=m["global_reward"], loc=m["local_reward"], loss=round(m["total"], 4), kl=round(m["kl_term"], 5))
            if self.step % self.cfg.sample_every == 0 or self.step == self.cfg.steps:
                write_grid(self.dir / "samples" / f"step_{self.step:06d}.png", *samples)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.checkpoint()
        bar.close()
        train_s = time.perf_counter() - t_start
        if self.cfg.eval.at_end:
            results["final"] = self.evaluate("final")
        results = {**self._reports(), **results, "steps_done": self.step,
                   "train_seconds": round(train_s, 1)}
        write_json(self.dir / "results.json", results)
        return results

    def evaluate(self, name: str) -> dict:
        e = self.cfg.eval
        report = run_eval(self.policy, heldout_set()[: e.prompts], e.images_per_prompt, self.dir / "eval" / name,
                          e.seed, EVAL_SAMPLING, save_images=True, judge_model=self.judge.model)
        self.log(f"eval {name}: CompWorld-Bench {report['overall']:.4f}, judge mean global {report['judge_mean_global']:.4f}")
        return report

    def _reports(self) -> dict:
        out = {}
        for name in ("initial", "final"):
            f = self.dir / "eval" / name / "report.json"
            if f.exists():
                out[name] = json.loads(f.read_text())
        return out

    # ---- checkpoints: model + optimiser + reference + RNG position + data position + version ----
    def checkpoint(self) -> None:
        d = self.dir / "checkpoints" / f"step_{self.step:06d}"
        self.policy.save(d / "model")
        self.learner.save(d / "learner.safetensors", {"step": str(self.step)})
        write_json(d / "state.json", {"step": self.step, "policy_version": self.learner.version,
                                      "data_position": self.step * self.cfg.rollout.prompts_per_step,
                                      "rng": {"seed": self.cfg.seed, "derived_from": "(seed, step)"}})
        write_text(self.dir / "checkpoints" / "latest", d.name + "\n")

    def resume(self) -> None:
        latest = self.dir / "checkpoints" / "latest"
        if not latest.exists():
            return
        d = self.dir / "checkpoints" / latest.read_text().strip()
        self.policy.net.load_state_dict(load_model(d / "model").net.state_dict())
        self.learner.load(d / "learner.safetensors")
        self.step = json.loads((d / "state.json").read_text())["step"]
        self.log(f"resumed from {d} (step {self.step}, policy version {self.learner.version})")


def write_grid(path: Path, rollouts, judgements, n: int = 8, scale: int = 4) -> None:
    """Up to n samples: the image, and beside it the image tinted by its reward map (green high, red low)."""
    from .io import atomic_write

    tiles = []
    for r, j in list(zip(rollouts, judgements))[:n]:
        img = r.image.astype(np.float32)
        m = j.reward_map
        m = (m + 1) / 2 if m.min() < 0 else m  # signed maps live in [-1, 1]
        tint = np.stack([1 - m, m, np.zeros_like(m)], -1) * 255
        tiles.append(np.concatenate([img, 0.5 * img + 0.5 * tint], 1))
    grid = np.concatenate(tiles, 0).clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    atomic_write(path, lambda p: pil.save(p, format="PNG"))
