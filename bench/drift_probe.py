"""Issue 18, a diagnostic: what an SRUM run did to its generator's knowledge of the world, token by token.

For each model (the base and the final checkpoints of the runs named), on renders of the 150 even-numbered held-out
prompts (one seeded layout each, encoded by the model's VQ): the mean NLL of the ground-truth image tokens,
split into background tokens (the commonest code: empty canvas) and object tokens; and on 120 of the model's own
samples (60 prompts x 2, seed 7), the mean entropy of its next-token distribution (sharpening would lower it).
Prints JSON; writes docs/results/drift_probe.json, keeping the runs probed before on the same base weights.

    python bench/drift_probe.py [--base builtin] RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from _previous import previous
from srum.models import load_model, weights_sha256
from srum.rundir import latest_checkpoint
from srum.world import heldout_set, layout
from srum.world.render import draw


def probe(model, prompts: list[str], truth: torch.Tensor, background: int) -> dict:
    with torch.no_grad():
        logp = model.image_logits(prompts, truth).log_softmax(-1)
        nll = -logp.gather(-1, truth[..., None])[..., 0]
        own_prompts = prompts[::5][:60] * 2
        _, own = model.sample(own_prompts, seed=7)
        lp = model.image_logits(own_prompts, torch.as_tensor(own)).log_softmax(-1)
        entropy = -(lp.exp() * lp).sum(-1).mean()
    bg = truth == background
    return {"truth_nll": round(nll.mean().item(), 4), "truth_nll_background": round(nll[bg].mean().item(), 4),
            "truth_nll_objects": round(nll[~bg].mean().item(), 4), "own_sample_entropy": round(entropy.item(), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--base", default="builtin", help="the runs' initial model (a name or a directory)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "results" / "drift_probe.json")
    args = ap.parse_args()
    out, sha = args.out, weights_sha256(args.base)[:12]
    old = previous(out, base_sha256=sha)
    kept = old.get("models", {})
    specs = heldout_set()[::2]
    rng = random.Random(0)
    images = np.stack([draw(layout(s, rng)) for s in specs])
    prompts = [s.prompt for s in specs]
    base = load_model(args.base)
    truth = torch.as_tensor(base.encode(images)).long()
    background = int(np.bincount(truth.flatten().numpy()).argmax())
    res = {"what": __doc__.split("\n\n")[0], "base_sha256": sha, "prompts": len(prompts),
           "background_share": round(float((truth == background).float().mean()), 3),
           "models": kept | {"base": probe(base, prompts, truth, background)}}
    for run in args.runs:
        res["models"][run.name] = probe(load_model(latest_checkpoint(run) / "model"), prompts, truth, background)
        print(json.dumps({run.name: res["models"][run.name]}), flush=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
