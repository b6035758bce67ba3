"""Issue 20: judge throughput, vLLM against transformers on the same model, images/s at batch 64 (median of
--runs), and their agreement on P(yes). The model is a tiny random Qwen2-VL built here (tests/tiny_vlm.py) or
--model DIR (any local Qwen2-VL directory). Run it as its own process: vLLM's CPU worker replaces
torch.set_num_threads for the whole process.

    python bench/vllm_judge.py [--model DIR] [--batch 64] [--runs 3] [--out docs/results/vllm_judge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


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


def timed(fn, *args) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "vllm_judge.json")
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
        tv, pv = timed(vllm.judge_yes_prob, images, questions)
        th, ph = timed(hf, images, questions)
        v_rate.append(args.batch / tv)
        h_rate.append(args.batch / th)
        diff.append(float(np.abs(pv - ph).max()))
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
