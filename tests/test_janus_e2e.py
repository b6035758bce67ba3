"""The janus backend end to end on a tiny random Janus at 64 x 64 (not CompWorld's 32): srum eval, srum judge,
srum train with both engines, and the checkpoint a Hugging Face directory that from_pretrained loads. Plus
free-text (T2I-CompBench-format) prompts training end to end."""

import json
from pathlib import Path

import pytest
import torch

from srum.cli import main
from srum.models import load_model

DATA = Path(__file__).parent / "data"
SMALL = ["--set", "rollout.prompts_per_step=2", "--set", "rollout.samples_per_prompt=2", "--set", "eval.prompts=6",
         "--set", "eval.images_per_prompt=1", "--set", "checkpoint_every=1", "--set", "learner.lr=0.01"]


def test_eval_and_judge_on_a_64px_janus(tmp_path, tiny_janus_dir, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a red square"}\n{"prompt": "two blue circles"}\n')
    assert main(["eval", "--model", str(tiny_janus_dir), "--prompts", str(f), "--images-per-prompt", "2", "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["prompts"] == 2 and set(report["categories"]) == {"single", "numeracy"}
    manifest = tmp_path / "e" / "manifest.jsonl"
    assert len(manifest.read_text().splitlines()) == 4
    assert main(["judge", "--model", str(tiny_janus_dir), "--manifest", str(manifest), "--out", str(tmp_path / "j.jsonl")]) == 0
    judged = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(0 < j["yes_prob"] < 1 for j in judged)


def test_eval_says_no_oracle_applies_to_free_text(tmp_path, tiny_janus_dir):
    assert main(["eval", "--model", str(tiny_janus_dir), "--prompts", str(DATA / "t2i_compbench_sample.txt"),
                 "--images-per-prompt", "1", "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["oracle"].startswith("none") and "overall" not in report and -1 <= report["judge_mean_global"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_train_changes_the_weights_and_saves_a_hugging_face_directory(tmp_path, tiny_janus_dir, engine):
    from transformers import JanusForConditionalGeneration

    run = tmp_path / "run"
    assert main(["train", "--engine", engine, "--out", str(run), "--steps", "2", "--set", f"model={tiny_janus_dir}",
                 "--set", "eval.at_start=false", *SMALL]) == 0
    ckpt = run / "checkpoints" / "step_000002" / "model"
    hf = JanusForConditionalGeneration.from_pretrained(ckpt, local_files_only=True)
    before = load_model(tiny_janus_dir).net.state_dict()
    after = hf.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("model.language_model.", "model.generation_")) for k in moved)  # the VQ and judge path stay
    assert json.loads((run / "results.json").read_text())["final"]["images_per_prompt"] == 1


@pytest.mark.slow
def test_t2i_compbench_prompts_train_end_to_end(tmp_path, tiny_janus_dir):
    run = tmp_path / "run"
    assert main(["train", "--engine", "local", "--out", str(run), "--steps", "2", "--set", f"model={tiny_janus_dir}",
                 "--set", f"rollout.prompts={DATA / 't2i_compbench_sample.txt'}", "--set", "eval.at_start=false",
                 "--set", "eval.at_end=false", *SMALL]) == 0
    ledger = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 2 and len({i for r in ledger for i in r["ids"]}) == 8
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["local_reward"] is not None for r in rows)  # the extractor's phrases were judged per region
