"""Copy a pretraining run's model into the package as the built-in checkpoint.

    python scripts/ship_builtin.py runs/pretrain

Copies config.json, model.safetensors, tokenizer.json and the run's pretrain_config.json, and writes
pretrain_stats.json from the run's saved state, summed over every stage it warm-started from.
"""

import json
import shutil
import sys
from pathlib import Path

from safetensors import safe_open

from srum.models import BUILTIN_DIR, load_model


def run_stats(run: Path) -> dict:
    """Steps, wall time and peak memory of a pretraining run, plus those of the run it warm-started from."""
    with safe_open(str(run / "state" / "train_state.safetensors"), "pt") as h:
        meta = h.metadata()
    cfg = json.loads((run / "pretrain_config.json").read_text())
    step = int(meta["step"])
    stats = {"steps": step, "wall_time_s": round(float(meta["elapsed_s"]), 1), "peak_rss_mb": float(meta["peak_rss_mb"]),
             "generation_samples": step * cfg["gen_batch"], "understanding_samples": step * cfg["und_batch"],
             "threads": cfg["threads"], "machine": "2 CPU cores (the CI machine type)"}
    if cfg.get("init_from"):
        before = run_stats(Path(cfg["init_from"]))
        keys = ("steps", "wall_time_s", "peak_rss_mb")
        stats["stages"] = before.get("stages", [{k: before[k] for k in keys}]) + [{k: stats[k] for k in keys}]
        for k in ("steps", "wall_time_s", "generation_samples", "understanding_samples"):
            stats[k] = round(stats[k] + before[k], 1)
        stats["peak_rss_mb"] = max(stats["peak_rss_mb"], before["peak_rss_mb"])
    return stats


def main(run: Path) -> None:
    src = run / "model"
    load_model(src)  # refuse to ship something that does not load
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(src / f, BUILTIN_DIR / f)
    shutil.copyfile(run / "pretrain_config.json", BUILTIN_DIR / "pretrain_config.json")
    # Always from the run's state, so that every stage it warm-started from is counted.
    (BUILTIN_DIR / "pretrain_stats.json").write_text(json.dumps(run_stats(run), indent=2) + "\n")
    print(f"shipped {src} -> {BUILTIN_DIR}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
