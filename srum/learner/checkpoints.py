"""Checkpoints of a run: RUN/checkpoints/step_N/ holds model/, learner.safetensors (optimiser, version) and
state.json (step, version, data position); RUN/checkpoints/latest names the newest. The RNG is not saved: every
draw derives from (seed, step)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import InputError, write_json, write_text
from ..testing.faults import fault_point


def write_checkpoint(run_dir: Path, step: int, policy, learner, data: dict, seed: int) -> Path:
    """step_N/: model, learner state, state.json (`data`: the data position in prompts and the batches learned beyond
    it); `latest` is moved last, so a kill mid-way leaves the previous one named."""
    d = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
    policy.save(d / "model")
    learner.save(d / "learner.safetensors", {"step": str(step)})
    fault_point("checkpoint", step)
    write_json(d / "state.json", {"step": step, "policy_version": learner.version, **data,
                                  "rng": {"seed": seed, "derived_from": "(seed, step)"}})
    write_text(Path(run_dir) / "checkpoints" / "latest", d.name + "\n")
    return d


def read_checkpoint(run_dir: Path, policy, learner) -> dict | None:
    """Restore the newest checkpoint of `run_dir` into `policy` and `learner`; its state.json, or None if none."""
    d = latest_checkpoint(run_dir)
    if d is None:
        return None
    policy.load_state(d / "model")
    learner.load(d / "learner.safetensors")
    return {**json.loads((d / "state.json").read_text()), "dir": str(d)}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint directory of a run (what `checkpoints/latest` names), or None if there is none.
    A `latest` naming a checkpoint that is missing or incomplete is an error: resuming from anything else
    would silently start over."""
    latest = Path(run_dir) / "checkpoints" / "latest"
    if not latest.exists():
        return None
    name = latest.read_text().strip()
    d = latest.parent / name
    if not name or not (d / "state.json").exists() or not (d / "model").is_dir():
        raise InputError(f"{latest}: names {name!r}, which is missing or incomplete; point it at a complete "
                         f"checkpoint ({', '.join(sorted(p.name for p in latest.parent.glob('step_*'))) or 'none'})")
    return d
