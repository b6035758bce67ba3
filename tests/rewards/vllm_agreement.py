"""Run in its own process by test_vllm_judge.py (vLLM's CPU worker replaces torch.set_num_threads for the whole
process): P(yes) of a tiny random Qwen2-VL from vLLM and from transformers on the same images; prints JSON."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def transformers_yes_prob(d: Path, judge, images, questions) -> np.ndarray:
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(d, local_files_only=True)
    model = Qwen2VLForConditionalGeneration.from_pretrained(d, local_files_only=True).eval()
    out = []
    for img, q in zip(images, questions):
        inputs = proc(text=[judge.chat(q)], images=[img], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        out.append(float(logits[[judge.yes, judge.no]].softmax(-1)[0]))
    return np.array(out)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tiny_vlm import build_tiny_qwen2vl

    from srum.rewards.vllm_judge import VllmJudge

    d = build_tiny_qwen2vl(Path(sys.argv[1]))
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    prompts = ["a red square", "two blue circles", "a green triangle above a white square", "three yellow circles"]
    judge = VllmJudge(d)
    questions = [judge.question(prompts[i % len(prompts)]) for i in range(n)]
    judge.judge_yes_prob(images[:4], questions[:4])  # warm
    t = time.perf_counter()
    p_vllm = judge.judge_yes_prob(images, questions)
    t_vllm = time.perf_counter() - t
    t = time.perf_counter()
    p_hf = transformers_yes_prob(d, judge, images, questions)
    t_hf = time.perf_counter() - t
    print(json.dumps({"images": n, "max_abs_diff": float(np.abs(p_vllm - p_hf).max()), "p_yes_range": [float(p_vllm.min()), float(p_vllm.max())],
                      "vllm_images_per_s": round(n / t_vllm, 1), "transformers_images_per_s": round(n / t_hf, 1),
                      "threads": os.cpu_count()}))


if __name__ == "__main__":
    main()
