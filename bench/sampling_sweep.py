"""Issue 17: the built-in's CompWorld-Bench score under other sampling settings than its default (temperature 1,
every token, no guidance) — whether its default is what the score should be quoted at. 300 held-out prompts x K
images per setting, the same evaluation seed for all. Prints JSON and writes docs/results/sampling_sweep.json (or
--out), keeping the rows measured before on the same weights.

    python bench/sampling_sweep.py [--model builtin] [--images-per-prompt 8] [--settings "CFG 1.25,CFG 2"] [--out F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _previous import previous
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
    "CFG 1.25": (1.0, 0, 1.25),
    "CFG 1.5": (1.0, 0, 1.5),
    "CFG 2": (1.0, 0, 2.0),
    "CFG 3": (1.0, 0, 3.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--images-per-prompt", type=int, default=8)
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "results" / "sampling_sweep.json")
    args = ap.parse_args()
    names = [n.strip() for n in args.settings.split(",")]
    if unknown := [n for n in names if n not in SETTINGS]:
        raise SystemExit(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    sha = weights_sha256(args.model)[:12]
    old = previous(args.out, model_sha256=sha, images_per_prompt=args.images_per_prompt)
    model = load_model(args.model)
    rows = old.get("rows", {})
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            t, k, cfg = SETTINGS[name]
            r = run_eval(model, heldout_set(), args.images_per_prompt, Path(tmp) / str(i), 0,
                         SampleOptions(temperature=t, top_k=k, cfg_scale=cfg), save_images=False)
            rows[name] = {"overall": r["overall"], **r["categories"]}
            print(json.dumps({name: rows[name]}), flush=True)
    res = {"model": args.model, "model_sha256": sha, "images_per_prompt": args.images_per_prompt,
           "prompts": len(heldout_set()), "rows": rows}
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
