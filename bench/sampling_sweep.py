"""Issue 17: the built-in's CompWorld-Bench score under other sampling settings than its default (temperature 1,
every token, no guidance) — whether its default is what the score should be quoted at. 300 held-out prompts x K
images per setting, the same evaluation seed for all. Prints JSON and writes docs/results/sampling_sweep.json.

    python bench/sampling_sweep.py [--model builtin] [--images-per-prompt 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from srum.evaluate import run_eval
from srum.models import load_model, weights_sha256
from srum.models.sampling import SampleOptions
from srum.world import heldout_set

SETTINGS = {  # name: (temperature, top_k, cfg_scale)
    "default (T 1, all tokens)": (1.0, 0, 1.0),
    "T 0.7": (0.7, 0, 1.0),
    "T 0.85": (0.85, 0, 1.0),
    "T 1.15": (1.15, 0, 1.0),
    "top-k 50": (1.0, 50, 1.0),
    "top-k 200": (1.0, 200, 1.0),
    "CFG 1.5": (1.0, 0, 1.5),
    "CFG 3": (1.0, 0, 3.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--images-per-prompt", type=int, default=8)
    args = ap.parse_args()
    model = load_model(args.model)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (t, k, cfg) in SETTINGS.items():
            r = run_eval(model, heldout_set(), args.images_per_prompt, Path(tmp) / str(len(rows)), 0,
                         SampleOptions(temperature=t, top_k=k, cfg_scale=cfg), save_images=False)
            rows[name] = {"overall": r["overall"], **r["categories"]}
            print(json.dumps({name: rows[name]}), flush=True)
    res = {"model": args.model, "model_sha256": weights_sha256(args.model)[:12], "images_per_prompt": args.images_per_prompt,
           "prompts": len(heldout_set()), "rows": rows}
    out = Path(__file__).resolve().parent.parent / "docs" / "results" / "sampling_sweep.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
