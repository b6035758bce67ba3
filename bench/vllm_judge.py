"""Issue 20: judge images/s at batch 64, vLLM against transformers on one Qwen2-VL (a tiny random one, or --model DIR),
and their largest P(yes) difference. Run it as its own process (vLLM's CPU worker sets torch's threads).

    python bench/vllm_judge.py [--model DIR] [--batch 64] [--runs 3] [--out docs/results/vllm_judge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, timed


def transformers_judge(d: Path, judge):
    """P(yes) from transformers' Qwen2-VL on a whole batch at once (left-padded, the last position's logits)."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(d, local_files_only=True)
    proc.tokenizer.padding_side = "left"
    model = Qwen2VLForConditionalGeneration.from_pretrained(d, local_files_only=True).eval()

    def yes_prob(images, questions) -> np.ndarray:
        inputs = proc(text=[judge.chat(q) for q in questions], images=list(images), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1]
        return logits[:, [judge.yes, judge.no]].softmax(-1)[:, 0].numpy()

    return yes_prob


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "vllm_judge.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_vlm import build_tiny_qwen2vl

    from srum.rewards.vllm_judge import VllmJudge

    d = args.model or build_tiny_qwen2vl(Path(tempfile.mkdtemp(prefix="srum-qwen-")) / "qwen")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    prompts = ["a red square", "two blue circles", "a green triangle above a white square", "three yellow circles"]
    vllm = VllmJudge(d)
    questions = [vllm.question(prompts[i % len(prompts)]) for i in range(args.batch)]
    hf = transformers_judge(Path(d), vllm)
    vllm.judge_yes_prob(images[:4], questions[:4]), hf(images[:4], questions[:4])  # warm both
    v_rate, h_rate, diff = [], [], []
    for _ in range(args.runs):
        out = {}
        v_rate.append(args.batch / timed(lambda: out.update(v=vllm.judge_yes_prob(images, questions))))
        h_rate.append(args.batch / timed(lambda: out.update(h=hf(images, questions))))
        diff.append(float(np.abs(out["v"] - out["h"]).max()))
    res = {"command": "python bench/vllm_judge.py " + " ".join(sys.argv[1:]), "model": "tiny random Qwen2-VL" if not args.model else str(args.model),
           "batch": args.batch, "runs": args.runs, "machine": f"{os.cpu_count()} CPU cores",
           "vllm_images_per_s": round(statistics.median(v_rate), 1), "transformers_images_per_s": round(statistics.median(h_rate), 1),
           "vllm_over_transformers_per_run": [round(v / h, 2) for v, h in zip(v_rate, h_rate)],
           "max_abs_diff_p_yes": max(diff)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
