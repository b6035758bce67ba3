"""A run: what `srum train --out RUN` reads and writes, the checks that keep a rerun from mixing two runs, and the
lifecycle both engines share (`Run`): prepare the directory, evaluate at start and end, log every learner step,
write results.json. An engine supplies only its training loop.

    RUN/config.yaml            the configuration of the latest command (the run's identity must not change)
    RUN/metrics.jsonl          one row per learner step
    RUN/ledger.jsonl           one row per learner step: the batch and the rollout ids it learned from
    RUN/checkpoints/step_N/    model/, learner.safetensors, state.json; checkpoints/latest names the newest
                               (srum/learner/checkpoints.py)
    RUN/samples/, RUN/eval/{initial,final}/, RUN/results.json
"""

from __future__ import annotations

from pathlib import Path

import yaml

import json
import time
from collections import deque

import torch

from .config import TrainConfig, dump_config
from .evaluate import run_eval
from .io import InputError, StopRun, open_log, write_json, write_text
from .learner.checkpoints import latest_checkpoint
from .samples import write_grid
from .trackers import Trackers
from .world import eval_set

# What a run is: changing any of these and resuming would continue another run's weights under new rules.
# Steps, evaluation, checkpointing, time budget and the Ray layout may change between invocations.
IDENTITY = ("model", "seed", "rollout", "reward", "learner")


def prepare(run_dir: Path, cfg) -> None:
    """Refuse a --out that is a file, and a resumed run whose identity differs from its own config.yaml."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir}: is a file, not a run directory (nothing was written)")
    own = run_dir / "config.yaml"
    if latest_checkpoint(run_dir) is None or not own.exists():  # (a dangling `latest` is refused in there)
        return
    try:
        before = yaml.safe_load(own.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{own}: not valid YAML ({e}); move the run aside or repair its config") from None
    for (section, old), (new, values) in RENAMED.items():  # a run of an older srum, in today's names
        part = before.get(section) or {}
        if old in part and new not in part and part[old] in values:
            part[new] = values[part.pop(old)]
    for (section, key), value in ABSENT_MEANT.items():
        before.setdefault(section, {}).setdefault(key, value)
    now, defaults = cfg.model_dump(mode="json"), type(cfg)().model_dump(mode="json")
    for key in IDENTITY:
        for path, a, b in _differences(before.get(key), now.get(key), key, defaults.get(key)):
            raise InputError(f"{own}: {path}: the run was started with {a!r}, this command says {b!r}; resume it with "
                             f"its own settings or give another --out")


RETIRED = "no such option in this srum (renamed or retired: docs/config.md)"
RENAMED = {("reward", "relations"): ("judge_mode", {True: "grounded", False: "self"})}  # 2026-12-07, issue 37
# options whose default changed after they were added: a run whose config.yaml lacks one ran with this value, not
# today's default (so it resumes only with it set so, not silently on another prompt stream)
ABSENT_MEANT = {("rollout", "scenes"): False}  # 2026-12-08, issue 37: the built-in pretrained on training scenes


def _differences(a, b, path: str, default=None):
    """Where a run's config.yaml (a) and this command's (b) differ. An option added to srum since the run started,
    absent from a and at its default in b, is the same run (an upgrade keeps runs resumable); one b no longer has
    is named as such."""
    if isinstance(a, dict) and isinstance(b, dict):
        d = default if isinstance(default, dict) else {}
        for k in sorted(set(a) | set(b)):
            if k not in a and b[k] == d.get(k, object()):
                continue
            yield from _differences(a.get(k), b.get(k, RETIRED), f"{path}.{k}", d.get(k))
    elif a != b:
        yield path, a, b


STOPPED = "stopped.json"  # why a check stopped the run (issue 39); removed when the run is started again
GRID_CAPTION = "image | reward map | prompt, judge, oracle"


class Run:
    """One run directory's lifecycle. `open()` once per command; `log_from(step)` before the first step learned in
    this process (rows of steps after `step`, left by a kill, are dropped: they are learned again); `record()` per
    learner step; `close()`; `finish()` writes results.json."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        self.cfg, self.dir, self.log = cfg, Path(run_dir), log
        self.metrics = self.ledger = self.trackers = None

    def open(self) -> None:
        prepare(self.dir, self.cfg)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "config.yaml", dump_config(self.cfg))
        (self.dir / STOPPED).unlink(missing_ok=True)  # a rerun resumes from the newest checkpoint: running again

    def judge_failures(self, step: int, row: dict) -> None:
        """Book a learned step's failed judgements (`judge_failures` of its `judge_samples`); stop the run (StopRun
        "judge_failures") when more than reward.judge.max_failure_share of the last failure_window samples failed.
        The step itself stands: its failed groups were dropped, never learned from."""
        j = self.cfg.reward.judge
        if not hasattr(self, "_window"):
            self._window = deque(maxlen=j.failure_window)
        failed, total = row.get("judge_failures") or 0, row.get("judge_samples") or 0
        self._window.extend([True] * failed + [False] * (total - failed))
        bad = sum(self._window)
        if bad > j.max_failure_share * j.failure_window or (len(self._window) == j.failure_window
                                                              and bad / j.failure_window > j.max_failure_share):
            raise StopRun("judge_failures", f"the judge failed {bad} of the last {len(self._window)} samples (more than "
                          f"reward.judge.max_failure_share {j.max_failure_share} of a window of {j.failure_window}) at step "
                          f"{step}; failed samples are dropped, never scored 0: fix the judge, then run the same command "
                          "to resume", step)

    def checks(self, step: int, row: dict) -> None:
        """After a learned step's row is written: the checks that may stop the run by name (StopRun)."""
        self.judge_failures(step, row)
        self.logprob_gap(step, row)

    def logprob_gap(self, step: int, row: dict) -> None:
        """Rollout and learner agree (issue 39, srum/learner/agreement.py): a step's log-probability gap beyond
        learner.logprob_warn is said, beyond learner.logprob_stop the run stops (StopRun "logprob_gap")."""
        gap, c = row.get("logprob_gap"), self.cfg.learner
        if gap is None or not (gap > c.logprob_warn or gap > c.logprob_stop or gap != gap):
            return
        what = (f"step {step}: the learner's log-probabilities of the sampled tokens lie {gap:.3g} nats from those the "
                f"generator recorded (mean over tokens; max {row.get('logprob_gap_max', float('nan')):.3g})")
        if gap > c.logprob_stop or gap != gap:  # (NaN: no agreement at all)
            raise StopRun("logprob_gap", f"{what}, above learner.logprob_stop {c.logprob_stop}: generator and learner do not "
                          "compute the same policy (weights, prompt format, dtype); fix that, then run the same command "
                          "to resume", step)
        self.log(f"srum: warning: {what}, above learner.logprob_warn {c.logprob_warn}")

    def stopped(self, e: StopRun, step: int) -> None:
        """A check stopped the run (issue 39): say so by name (log line, RUN/stopped.json, which `srum status`
        shows). Nothing is written from the bad state: the newest checkpoint is the last good one."""
        latest = latest_checkpoint(self.dir)
        write_json(self.dir / STOPPED, {"reason": e.reason, "message": str(e), "after_step": step,
                                        "checkpoint": latest.name if latest else None})
        self.log(f"srum: run stopped ({e.reason}) after step {step}: {e}; the newest checkpoint "
                 f"({latest.name if latest else 'none'}) is the last good state")
        self.finish_logs()

    # ---- evaluation ----
    def wants_initial_eval(self, step: int) -> bool:
        return self.cfg.eval.at_start and step == 0 and not (self.dir / "eval" / "initial" / "report.json").exists()

    def evaluate(self, name: str, policy, judge_model) -> dict:
        """CompWorld-Bench of `policy` on the held-out set, with the judge's mean global score beside it."""
        from .models import SampleOptions

        e = self.cfg.eval
        report = run_eval(policy, eval_set(e.split, e.prompts), e.images_per_prompt, self.dir / "eval" / name, e.seed,
                          SampleOptions.of(e.sampling), save_images=True, judge_model=judge_model)
        self.log(f"eval {name}: CompWorld-Bench {report['overall']:.4f}, judge mean global {report['judge_mean_global']:.4f}")
        return report

    def eval_reports(self) -> dict:
        out = {}
        for name in ("initial", "final"):
            f = self.dir / "eval" / name / "report.json"
            if f.exists():
                out[name] = json.loads(f.read_text())
        return out

    # ---- one row per learner step ----
    def log_from(self, step: int) -> None:
        self.close()
        self.metrics, self.ledger = open_log(self.dir / "metrics.jsonl", step), open_log(self.dir / "ledger.jsonl", step)
        if self.trackers is None:
            lg = self.cfg.logging
            self.trackers = Trackers(lg.trackers, self.dir, self.cfg.model_dump(mode="json"), lg.project, lg.wandb_mode,
                                     lg.mlflow_uri)

    def record(self, step: int, row: dict, ledger: dict) -> None:
        """The step's ledger row (the rollout ids it learned), its metrics row, the trackers, and its sample grid
        if one was written (`sample_path`)."""
        self.ledger.write(json.dumps({"step": step, **ledger}) + "\n")
        self.metrics.write(json.dumps(row) + "\n")
        self.ledger.flush(), self.metrics.flush()
        self.trackers.log(step, row)
        grid = self.sample_path(step)
        if grid is not None and grid.exists():
            self.trackers.image(step, "samples", grid, f"step {step}: {GRID_CAPTION}")

    def sample_path(self, step: int) -> Path | None:
        """Where step `step`'s sample grid goes, every `sample_every` steps and at the last."""
        if step % self.cfg.sample_every and step != self.cfg.steps:
            return None
        return self.dir / "samples" / f"step_{step:06d}.png"

    def write_samples(self, step: int, rollouts, judgements) -> None:
        path = self.sample_path(step)
        pairs = [(r, j) for r, j in zip(rollouts, judgements) if j.failed is None]  # a failed judgement has no map
        if path is not None and pairs:
            rollouts, judgements = zip(*pairs)
            write_grid(path, rollouts, judgements)

    def close(self) -> None:
        for f in (self.metrics, self.ledger):
            if f is not None:
                f.close()
        self.metrics = self.ledger = None

    def finish_logs(self, evaluations: dict | None = None, step: int = 0) -> None:
        """Close the step logs and the trackers, after logging this command's evaluations to them."""
        self.close()
        if self.trackers is not None:
            for name, rep in (evaluations or {}).items():
                self.trackers.log(step, {f"eval_{name}/{k}": v for k, v in rep.items() if k in ("overall", "judge_mean_global")})
            self.trackers.close()
            self.trackers = None

    def finish(self, results: dict) -> dict:
        """Close the logs (this command's evaluations logged to the trackers), write results.json with both
        evaluations."""
        evaluations = {k: v for k, v in results.items() if k in ("initial", "final")}
        self.finish_logs(evaluations, results.get("steps_done", 0))
        results = {**self.eval_reports(), **results, "torch_threads": torch.get_num_threads()}
        write_json(self.dir / "results.json", results)
        return results


class Budget:
    """The run's wall-clock budget (`time_budget_min`; 0: none)."""

    def __init__(self, minutes: float):
        self.start, self.seconds = time.perf_counter(), 60 * minutes

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return bool(self.seconds) and self.elapsed > self.seconds
