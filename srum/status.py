"""`srum status RUN`: what a run directory says about its run, finished or still running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from .io import InputError


def run_status(run: Path) -> dict:
    run = Path(run)
    if not (run / "config.yaml").exists():
        raise InputError(f"{run}: not a srum run directory (no config.yaml)")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = _rows(run / "metrics.jsonl")
    last = rows[-1] if rows else {}
    latest = run / "checkpoints" / "latest"
    out = {"run": str(run), "engine": cfg.get("engine"), "steps": f"{last.get('step', 0)}/{cfg.get('steps')}",
           "policy_version": last.get("version"), "checkpoint": latest.read_text().strip() if latest.exists() else None}
    if rows:
        out["last_step_age_s"] = round(time.time() - (run / "metrics.jsonl").stat().st_mtime, 1)
        recent = rows[-10:]
        for k in ("global_reward", "local_reward", "total", "kl_term", "staleness", "samples_per_s"):
            vals = [r[k] for r in recent if r.get(k) is not None]
            if vals:
                out[k] = round(sum(vals) / len(vals), 4)
        out["dropped_stale"] = last.get("dropped_stale", 0)
        out["judge_failures"] = {"samples": sum(r.get("judge_failures") or 0 for r in rows),  # issue 39: never a 0
                                 "dropped": sum(r.get("judge_dropped") or 0 for r in rows),
                                 "of": sum(r.get("judge_samples") or 0 for r in rows)}
        gaps = [r["logprob_gap"] for r in rows if r.get("logprob_gap") is not None]  # issue 39: rollout vs learner
        if gaps or any(r.get("logprob_unchecked") for r in rows):
            out["logprob_gap"] = {"last": gaps[-1] if gaps else None, "max": max(gaps, default=None), "checked": len(gaps),
                                  "unchecked": sum(r.get("logprob_unchecked") or 0 for r in rows)}
        out["reissued"] = last.get("reissued", 0)  # batches made again after their generator died
        out["restarts"] = {role: last.get(f"restarts_{role}", 0) for role in ("generator", "judge", "learner")}
        if last.get("nodes_lost"):  # Ray engine on a cluster: nodes that died during the run
            out["nodes_lost"] = last["nodes_lost"]
    ledger = _rows(run / "ledger.jsonl")
    if ledger:
        ids = [i for r in ledger for i in r.get("ids", [])]
        out["ledger"] = {"steps": len(ledger), "rollouts": len(ids), "distinct_rollouts": len(set(ids))}
    results = run / "results.json"
    out["state"] = "finished" if results.exists() else ("running or interrupted" if rows else "starting")
    if (run / "stopped.json").exists():  # a check stopped it (issue 39)
        stop = json.loads((run / "stopped.json").read_text())
        out["state"] = f"stopped ({stop['reason']}) after step {stop['after_step']}, newest checkpoint {stop['checkpoint']}"
        out["stopped"] = stop["message"]
    for name in ("initial", "final"):
        f = run / "eval" / name / "report.json"
        if f.exists():
            rep = json.loads(f.read_text())
            out[f"eval_{name}"] = {"overall": rep["overall"], "judge_mean_global": rep.get("judge_mean_global")}
    return out


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows


def format_status(st: dict) -> str:
    return "\n".join(f"{k:>16}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in st.items())
