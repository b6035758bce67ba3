"""A run directory: what `srum train --out RUN` reads and writes, and the checks that keep a rerun from
mixing two runs.

    RUN/config.yaml            the configuration of the latest command (the run's identity must not change)
    RUN/metrics.jsonl          one row per learner step
    RUN/ledger.jsonl           one row per learner step: the batch and the rollout ids it learned from
    RUN/checkpoints/step_N/    model/, learner.safetensors, state.json; checkpoints/latest names the newest
    RUN/samples/, RUN/eval/{initial,final}/, RUN/results.json
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .io import InputError

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
    now = cfg.model_dump(mode="json")
    for key in IDENTITY:
        for path, a, b in _differences(before.get(key), now.get(key), key):
            raise InputError(f"{own}: {path}: the run was started with {a!r}, this command says {b!r}; resume it with "
                             f"its own settings or give another --out")


def _differences(a, b, path: str):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _differences(a.get(k), b.get(k), f"{path}.{k}")
    elif a != b:
        yield path, a, b


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
