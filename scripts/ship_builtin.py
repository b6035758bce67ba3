"""Copy a pretraining run's model into the package as the built-in checkpoint.

    python scripts/ship_builtin.py runs/pretrain

Copies config.json, model.safetensors, tokenizer.json and the run's pretrain_config.json, and writes
pretrain_stats.json from the run's saved state, summed over every stage it warm-started from.
"""

import json
import shutil
import sys
from pathlib import Path

from srum.models import BUILTIN_DIR, load_model
from srum.models.mot_pretrain import pretrain_stats


def main(run: Path) -> None:
    src = run / "model"
    load_model(src)  # refuse to ship something that does not load
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(src / f, BUILTIN_DIR / f)
    shutil.copyfile(run / "pretrain_config.json", BUILTIN_DIR / "pretrain_config.json")
    # Always from the run's state, so that every stage it warm-started from is counted.
    (BUILTIN_DIR / "pretrain_stats.json").write_text(json.dumps(pretrain_stats(run), indent=2) + "\n")
    print(f"shipped {src} -> {BUILTIN_DIR}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
