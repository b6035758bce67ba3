"""Copy a pretraining run's model into the package as the built-in checkpoint.

    python scripts/ship_builtin.py runs/pretrain [--generation-from MODEL_DIR]

Copies config.json, model.safetensors, tokenizer.json and the run's pretrain_config.json, and writes
pretrain_stats.json from the run's saved state, summed over every stage it warm-started from.
--generation-from keeps another checkpoint's generation expert (recorded in pretrain_stats.json).
"""

import argparse
import json
import shutil
from pathlib import Path

from srum.models import BUILTIN_DIR, load_model, weights_sha256
from srum.models.mot_pretrain import pretrain_stats


def main(run: Path, generation_from: Path | None = None) -> None:
    src = run / "model"
    model = load_model(src)  # refuse to ship something that does not load
    # Always from the run's state, so that every stage it warm-started from is counted.
    stats = pretrain_stats(run)
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    if generation_from:
        model.take_generation_expert(load_model(generation_from))
        stats["generation_expert_from"] = {"model": str(generation_from), "sha256": weights_sha256(generation_from)}
        model.save(BUILTIN_DIR)
    else:
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            shutil.copyfile(src / f, BUILTIN_DIR / f)
    shutil.copyfile(run / "pretrain_config.json", BUILTIN_DIR / "pretrain_config.json")
    (BUILTIN_DIR / "pretrain_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"shipped {src} -> {BUILTIN_DIR}" + (f" with the generation expert of {generation_from}" if generation_from else ""))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--generation-from", type=Path)
    args = ap.parse_args()
    main(args.run, args.generation_from)
