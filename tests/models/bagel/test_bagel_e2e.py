"""BAGEL end to end on a tiny random release directory (tests/models/bagel/tiny.py: the release layout, bf16 ema,
fp32 ae, a tokenizer made here, the ViT config saying one layer more), drawing 64 x 64 and 96 x 96 images (not
CompWorld's 32), with HF_HUB_OFFLINE=1: `srum eval`, `srum judge`, `srum train` with both engines (the generation
expert changes, the understanding expert and the ViT stay bit-identical, the checkpoint loads back strictly) and
`srum serve`'s /generate and /judge."""

import base64
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from srum.cli import main
from srum.models import load_model

os.environ["HF_HUB_OFFLINE"] = "1"
SIZE = ["--set", "rollout.sampling.height=64", "--set", "rollout.sampling.width=64",
        "--set", "eval.sampling.height=64", "--set", "eval.sampling.width=64"]
SMALL = ["--set", "rollout.prompts_per_step=2", "--set", "rollout.samples_per_prompt=2", "--set", "eval.prompts=4",
         "--set", "eval.images_per_prompt=1", "--set", "checkpoint_every=1", "--set", "learner.lr=0.01",
         "--set", "rollout.sampling.steps=3", "--set", "eval.sampling.steps=3", "--set", "device=cpu", *SIZE]


def test_eval_and_judge(bagel_release, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red square"}\n{"prompt": "two blue circles"}\n')
    assert main(["eval", "--model", str(bagel_release), "--prompts", str(f), "--images-per-prompt", "2", "--steps", "3",
                 "--cfg-scale", "2.0", "--device", "cpu", "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["prompts"] == 2 and set(report["categories"]) == {"single", "numeracy"} and 0 <= report["overall"] <= 1
    manifest = tmp_path / "e" / "manifest.jsonl"
    assert len(manifest.read_text().splitlines()) == 4  # the 96 x 96 images scored on CompWorld's canvas
    assert main(["judge", "--model", str(bagel_release), "--manifest", str(manifest), "--device", "cpu",
                 "--out", str(tmp_path / "j.jsonl")]) == 0
    judged = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(0 < j["yes_prob"] < 1 for j in judged)


def check_trained(release, run, steps):
    """The checkpoint's release directory loads strictly; only the generation expert moved."""
    ckpt = run / "checkpoints" / f"step_{steps:06d}" / "model"
    trained, base = load_model(ckpt), load_model(release)
    assert trained.policy_version == steps and trained.peft is None
    gen = set(base.generation_names())
    before, after = base.net.state_dict(), trained.net.state_dict()
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= gen and any("_moe_gen" in k for k in moved)
    frozen = [k for k in before if k not in gen]
    assert any(k.startswith("vit_model.") for k in frozen) and any(".mlp.gate_proj." in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # the understanding expert and the ViT: bit-identical
    results = json.loads((run / "results.json").read_text())
    assert results["steps_done"] == steps and results["final"]["images_per_prompt"] == 1
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == steps and all(np.isfinite(m["total"]) for m in metrics)
    return results


@pytest.mark.slow
def test_train_local_generation_expert(bagel_release, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--engine", "local", "--out", str(run), "--steps", "2", "--set", f"model={bagel_release}",
                 "--set", "eval.at_start=false", *SMALL]) == 0
    check_trained(bagel_release, run, 2)
    assert list((run / "samples").glob("*.png"))  # the trackers' sample grids at 64 x 64


@pytest.mark.slow
def test_train_ray_lora(bagel_release, tmp_path):
    """The Ray engine with LoRA: generator, judge and learner actors; the adapters alone are published and
    fetched, and the checkpoint holds them beside the merged release."""
    run = tmp_path / "run"
    args = ["train", "--engine", "ray", "--out", str(run), "--set", f"model={bagel_release}", "--set", "learner.train=lora",
            "--set", "learner.lora.rank=2", "--set", "eval.at_start=false", *SMALL]
    assert main([*args, "--steps", "2"]) == 0
    results = check_trained(bagel_release, run, 2)
    ckpt = run / "checkpoints" / "step_000002" / "model"
    assert (ckpt / "adapters.safetensors").exists()
    m = load_model(bagel_release)
    m.add_lora(rank=2)
    adapters = sum(p.numel() for n, p in m.net.named_parameters() if "lora_" in n)
    sync = results["ray"]["weight_sync"]  # what the generators fetched: float32 adapters, version by version
    assert sync["fetches"] >= 1 and sync["fetch_bytes"] == sync["fetches"] * adapters * 4


@pytest.fixture
def bagel_server(bagel_release):
    pytest.importorskip("ray")
    import ray
    from ray import serve
    from ray_head import free_port

    from srum.actors.driver import start_local_ray
    from srum.serve import start

    if ray.is_initialized():
        ray.shutdown()
    start_local_ray(num_cpus=2, log_to_driver=False)
    try:
        yield start(str(bagel_release), port=free_port(), replicas_max=1)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_serve_generate_and_judge(bagel_server):
    from test_serve import request

    from srum.world.canvas import to_canvas

    status, out = request(bagel_server, "/generate", {"prompt": "a red square above a blue circle", "n": 1, "seed": 3},
                          token=None)
    assert status == 200, out
    image = np.array(Image.open(io.BytesIO(base64.b64decode(out["images"][0]))))
    assert image.shape == (96, 96, 3)  # the model's own size (BAGEL's defaults: 50 steps, CFG 4)
    prompt = "a red square above a blue circle"
    status, j = request(bagel_server, "/judge", {"prompt": prompt, "image": out["images"][0]}, token=None)
    assert status == 200, j  # /judge takes what /generate drew, at its size
    assert -1 <= j["global_score"] <= 1 and np.array(j["reward_map"]).shape == (96, 96)
    buf = io.BytesIO()
    Image.fromarray(to_canvas(image[None])[0]).save(buf, format="PNG")  # CompWorld's 32 x 32 canvas: within the range
    status, j = request(bagel_server, "/judge", {"prompt": prompt, "image": base64.b64encode(buf.getvalue()).decode()},
                        token=None)
    assert status == 200 and np.array(j["reward_map"]).shape == (32, 32), j
    buf = io.BytesIO()
    Image.fromarray(np.zeros((97, 97, 3), np.uint8)).save(buf, format="PNG")  # one pixel over the tiny's latent table
    status, j = request(bagel_server, "/judge", {"prompt": prompt, "image": base64.b64encode(buf.getvalue()).decode()},
                        token=None)
    assert status == 422 and "an RGB PNG of 7 to 96 pixels a side" in j["error"], j
    status, h = request(bagel_server, "/healthz", token=None)
    assert status == 200 and h["policy_version"] == 0 and h["judge_image_sides"] == [7, 96]  # ViT patch 7, latent table 96
