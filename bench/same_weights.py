"""The local engine's weights after N steps of `srum train` from a checkout, as SHA-256s: the redesign's check that
the weights are equal before and after (same seed, same threads). Prints JSON.

    python bench/same_weights.py [--checkout PATH] [--steps 20] [--out DIR]
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from common import ROOT, env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the srum tree to run (PYTHONPATH)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, help="the run directory (default: a fresh temporary one)")
    args = ap.parse_args()
    checkout, out = args.checkout.resolve(), (args.out or Path(tempfile.mkdtemp(prefix="same-weights-")) / "run").resolve()
    subprocess.run([sys.executable, "-m", "srum.cli", "train", "--engine", "local", "--steps", str(args.steps), "--out", str(out),
                    "--set", "eval.at_start=false", "--set", "eval.at_end=false"], env=env(PYTHONPATH=str(checkout), OMP_NUM_THREADS="2"),
                   cwd=checkout, check=True, stdout=sys.stderr)
    f = out / "checkpoints" / f"step_{args.steps:06d}" / "model" / "model.safetensors"
    tensors, h = load_file(f), hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    commit = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty", "--abbrev=40", "--exclude=*"], capture_output=True,
                            text=True).stdout.strip()  # "-dirty": uncommitted changes in the tree that ran
    print(json.dumps({"checkout": str(checkout), "commit": commit, "steps": args.steps,
                      "sha256_file": hashlib.sha256(f.read_bytes()).hexdigest(), "sha256_tensors": h.hexdigest()}))


if __name__ == "__main__":
    main()
