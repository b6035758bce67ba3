"""The command-line contracts of issue 3: world render / check, eval, judge, pretrain errors."""

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from srum.cli import main


def write_prompts(path, prompts):
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return path


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_world_render_and_check(tmp_path, capsys):
    f = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a red square"}, {"prompt": "two blue circles", "category": "numeracy"},
                                             {"prompt": "a red circle above a green triangle"}])
    assert main(["world", "render", "--prompts", str(f), "--out", str(tmp_path / "r"), "--seed", "3"]) == 0
    manifest = rows(tmp_path / "r" / "manifest.jsonl")
    assert [m["file"] for m in manifest] == ["00000.png", "00001.png", "00002.png"]
    assert [m["category"] for m in manifest] == ["single", "numeracy", "spatial"]
    assert np.asarray(Image.open(tmp_path / "r" / "00001.png")).shape == (32, 32, 3)
    capsys.readouterr()
    assert main(["world", "check", "--manifest", str(tmp_path / "r" / "manifest.jsonl")]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(o["passed"] and o["failure"] is None for o in out[:3]) and out[3]["summary"]["passed"] == 3


def test_world_check_fails_a_swapped_colour(tmp_path, capsys):
    f = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a red square"}])
    main(["world", "render", "--prompts", str(f), "--out", str(tmp_path / "r")])
    m = tmp_path / "r" / "manifest.jsonl"
    m.write_text(m.read_text().replace("a red square", "a blue square"))
    capsys.readouterr()
    main(["world", "check", "--manifest", str(m)])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["passed"] is False and out[0]["failure"] == "wrong shape or colour"
    assert out[1]["summary"]["failures"] == {"wrong shape or colour": 1}


def test_render_rejects_a_bad_line_by_number(tmp_path, capsys):
    f = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a red square"}, {"prompt": "a red squircle"}])
    assert main(["world", "render", "--prompts", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "p.jsonl:2:" in capsys.readouterr().err
    f.write_text('{"prompt": "a red square"}\n{"text": "a red square"}\n')
    assert main(["world", "render", "--prompts", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "p.jsonl:2: missing string field 'prompt'" in capsys.readouterr().err


def test_eval_and_judge(tmp_path, tiny_model_dir, capsys):
    f = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a red square"}, {"prompt": "three white triangles"}])
    out = tmp_path / "e"
    assert main(["eval", "--model", str(tiny_model_dir), "--prompts", str(f), "--images-per-prompt", "3",
                 "--out", str(out), "--steps", "2"]) == 0
    manifest = rows(out / "manifest.jsonl")
    assert len(manifest) == 6 and set(manifest[0]) == {"file", "prompt", "category", "passed"}
    report = json.loads((out / "report.json").read_text())
    assert report["world"] == "compworld-v1" and report["prompts"] == 2 and report["images_per_prompt"] == 3
    assert set(report["categories"]) == {"single", "numeracy"} and 0 <= report["overall"] <= 1
    assert main(["judge", "--model", str(tiny_model_dir), "--manifest", str(out / "manifest.jsonl"),
                 "--out", str(tmp_path / "j.jsonl")]) == 0
    judged = rows(tmp_path / "j.jsonl")
    assert len(judged) == 6 and all(0 < j["yes_prob"] < 1 for j in judged) and judged[0]["file"] == "00000.png"


def test_eval_default_prompts_are_the_validation_split(tmp_path, tiny_model_dir, monkeypatch):
    import srum.evaluate as ev

    seen = {}
    monkeypatch.setattr(ev, "generate_images", lambda m, specs, k, *a, **kw: seen.setdefault("n", len(specs)) and ([], []))
    main(["eval", "--model", str(tiny_model_dir), "--images-per-prompt", "1", "--out", str(tmp_path / "e")])
    assert seen["n"] == 303  # the scene split's validation scenes (srum/world/scenes.py): choices, not claims


def test_judge_rejects_a_manifest_with_a_missing_image(tmp_path, tiny_model_dir, capsys):
    m = tmp_path / "manifest.jsonl"
    m.write_text('{"file": "nope.png", "prompt": "a red square"}\n')
    assert main(["judge", "--model", str(tiny_model_dir), "--manifest", str(m), "--out", str(tmp_path / "j")]) == 2
    assert "manifest.jsonl:1: image 'nope.png' not found" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    f = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a yellow circle"}])
    r = subprocess.run([sys.executable, "-m", "srum.cli", "world", "render", "--prompts", str(f), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "00000.png").exists()


def test_train_refuses_bad_config_before_starting_anything(tmp_path, capsys):
    assert main(["train", "--set", "ray.max_staleness=0", "--set", "ray.sync_every=3", "--out", str(tmp_path / "r")]) == 2
    assert "max_staleness (0) must be at least sync_every - 1" in capsys.readouterr().err
    assert main(["train", "--set", "learner.lrr=1", "--out", str(tmp_path / "r")]) == 2
    assert "--set learner.lrr=1: learner.lrr: unknown key" in capsys.readouterr().err
    assert main(["train", "--set", "device=gpu", "--out", str(tmp_path / "r")]) == 2
    assert "device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_eval_refuses_a_device_it_does_not_have(tmp_path, capsys):
    assert main(["eval", "--device", "tpu", "--out", str(tmp_path / "e")]) == 2
    assert "device 'tpu': expected cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--device", "cuda", "--out", str(tmp_path / "e")]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_scale_needs_a_size_and_a_running_job(capsys, monkeypatch):
    assert main(["scale"]) == 2
    assert "give --generators N and/or --judges N" in capsys.readouterr().err
    assert main(["scale", "--generators", "0"]) == 2
    assert "--generators must be at least 1" in capsys.readouterr().err


def test_status_summarises_a_run(tmp_path, capsys, tiny_model_dir):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "not a srum run directory" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--engine", "local", "--out", str(out), "--set", f"model={tiny_model_dir}", "--steps", "2",
                 "--set", "rollout.prompts_per_step=2", "--set", "rollout.sampling.steps=2", "--set", "eval.at_start=false",
                 "--set", "eval.prompts=6", "--set", "eval.images_per_prompt=1"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["steps"] == "2/2" and st["state"] == "finished" and st["checkpoint"] == "step_000002"
    assert "global_reward" in st and "eval_final" in st
