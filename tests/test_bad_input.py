"""Every bad input a user can hand the command line is a clear error: exit 2, a message that names the file,
line or field, no traceback, and nothing already on disk lost. One case per row; docs/results/reliability.md
lists them with the error each gets (bench/faults.py --bad-input prints the table from these cases)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from srum.cli import main


def jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def manifest(tmp, rows, images=None):
    d = tmp / "m"
    d.mkdir(exist_ok=True)
    for name, img in (images or {}).items():
        if isinstance(img, bytes):
            (d / name).write_bytes(img)
        else:
            Image.fromarray(img).save(d / name)
    return jsonl(d / "manifest.jsonl", rows)


RGB = np.zeros((32, 32, 3), np.uint8)


def model_copy(tmp, src, damage):
    d = tmp / "model"
    shutil.copytree(src, d)
    damage(d)
    return str(d)


def run_dir(tmp, model, **state):
    """A finished-looking run directory (what a previous `srum train` left)."""
    from srum.config import TrainConfig, dump_config, load_config

    r = tmp / "run"
    (r / "checkpoints").mkdir(parents=True)
    (r / "config.yaml").write_text(dump_config(load_config(TrainConfig, None, [f"model={model}"] + state.get("sets", []))))
    (r / "checkpoints" / "latest").write_text(state.get("latest", "step_000004") + "\n")
    if state.get("complete"):  # the checkpoint `latest` names is there
        (r / "checkpoints" / "step_000004" / "model").mkdir(parents=True)
        (r / "checkpoints" / "step_000004" / "state.json").write_text("{}")
    return str(r)


# (name, argv builder(tmp, dirs), expected message fragment)
CASES = [
    # configuration files and --set
    ("config: unknown key", lambda t, d: ["train", "--config", _yaml(t, "learner:\n  lrr: 1\n"), "--out", str(t / "r")], "cfg.yaml:2: learner.lrr: unknown key"),
    ("config: ill-typed value", lambda t, d: ["train", "--config", _yaml(t, "learner:\n  lr: fast\n"), "--out", str(t / "r")], "cfg.yaml:2: learner.lr"),
    ("config: not YAML", lambda t, d: ["train", "--config", _yaml(t, "learner: [1,\n"), "--out", str(t / "r")], "not valid YAML"),
    ("config: a list, not a mapping", lambda t, d: ["train", "--config", _yaml(t, "- 1\n- 2\n"), "--out", str(t / "r")], "top level must be a mapping"),
    ("config: missing file", lambda t, d: ["train", "--config", str(t / "nope.yaml"), "--out", str(t / "r")], "no such config file"),
    ("--set: no '='", lambda t, d: ["train", "--set", "learner.lr", "--out", str(t / "r")], "expected key=value"),
    ("--set: unknown key", lambda t, d: ["train", "--set", "learner.lrr=1", "--out", str(t / "r")], "--set learner.lrr=1: learner.lrr: unknown key"),
    ("--set: a value given a section", lambda t, d: ["train", "--set", "learner=3", "--out", str(t / "r")], "learner"),
    ("--set: unknown engine", lambda t, d: ["train", "--set", "engine=spark", "--out", str(t / "r")], "engine"),
    ("--set: staleness below the sync period", lambda t, d: ["train", "--set", "ray.max_staleness=0", "--set", "ray.sync_every=3", "--out", str(t / "r")], "max_staleness (0) must be at least sync_every - 1"),
    ("--set: negative learning-rate schedule numbers", lambda t, d: ["train", "--set", "rollout.samples_per_prompt=0", "--out", str(t / "r")], "rollout.samples_per_prompt"),
    ("--set: a retired option", lambda t, d: ["train", "--set", "learner.updates_per_batch=2", "--out", str(t / "r")], "learner.updates_per_batch: unknown key"),
    ("--set: a device that does not exist", lambda t, d: ["eval", "--device", "tpu", "--out", str(t / "e")], "device 'tpu'"),
    # numbers on the command line
    ("train --steps -5", lambda t, d: ["train", "--steps", "-5", "--out", str(t / "r")], "steps: Input should be greater than or equal to 1"),
    ("train --steps 0", lambda t, d: ["train", "--steps", "0", "--out", str(t / "r")], "steps: Input should be greater than or equal to 1"),
    ("eval --images-per-prompt 0", lambda t, d: ["eval", "--images-per-prompt", "0", "--out", str(t / "e")], "--images-per-prompt must be at least 1"),
    ("eval --steps 0", lambda t, d: ["eval", "--steps", "0", "--out", str(t / "e")], "--steps must be at least 1"),
    ("world prompts --n 0", lambda t, d: ["world", "prompts", "--set", "train", "--n", "0", "--out", str(t / "p.jsonl")], "--n must be at least 1"),
    ("scale --generators 0", lambda t, d: ["scale", "--generators", "0"], "--generators must be at least 1"),
    ("scale --judges -1", lambda t, d: ["scale", "--judges", "-1"], "--judges must be at least 1"),
    ("scale with no size", lambda t, d: ["scale"], "give --generators N and/or --judges N"),
    ("serve --replicas-max 0", lambda t, d: ["serve", "--replicas-max", "0"], "--replicas-max must be at least 1"),
    ("serve --port 70000", lambda t, d: ["serve", "--port", "70000"], "--port must be between 1 and 65535"),
    # prompt files
    ("prompts: a line that is not JSON", lambda t, d: ["world", "render", "--prompts", jsonl(t / "p.jsonl", ['{"prompt": "a red square"}', "{oops"]), "--out", str(t / "r")], "p.jsonl:2: not valid JSON"),
    ("prompts: a line that is not an object", lambda t, d: ["world", "render", "--prompts", jsonl(t / "p.jsonl", ["[1, 2]"]), "--out", str(t / "r")], "p.jsonl:1: expected a JSON object"),
    ("prompts: outside the grammar", lambda t, d: ["world", "render", "--prompts", jsonl(t / "p.jsonl", [{"prompt": "a red squircle"}]), "--out", str(t / "r")], "p.jsonl:1:"),
    ("prompts: no prompt field", lambda t, d: ["world", "render", "--prompts", jsonl(t / "p.jsonl", [{"text": "a red square"}]), "--out", str(t / "r")], "p.jsonl:1: missing string field 'prompt'"),
    ("prompts: a category that disagrees", lambda t, d: ["world", "render", "--prompts", jsonl(t / "p.jsonl", [{"prompt": "a red square", "category": "spatial"}]), "--out", str(t / "r")], "does not match the prompt"),
    ("prompts: an empty file", lambda t, d: ["eval", "--prompts", jsonl(t / "p.jsonl", []), "--out", str(t / "e")], "no prompts"),
    ("prompts: a missing file", lambda t, d: ["eval", "--prompts", str(t / "nope.jsonl"), "--out", str(t / "e")], "nope.jsonl: no such prompt file"),
    ("train: a missing prompt file", lambda t, d: ["train", "--set", f"rollout.prompts={t / 'nope.jsonl'}", "--out", str(t / "r")], "no such prompt file"),
    # model directories
    ("model: no such directory", lambda t, d: ["eval", "--model", str(t / "nope"), "--out", str(t / "e")], "not a model directory"),
    ("model: config.json is not JSON", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], lambda m: (m / "config.json").write_text("{no")), "--out", str(t / "e")], "config.json: not valid JSON"),
    ("model: an unknown model_type", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], lambda m: (m / "config.json").write_text('{"model_type": "bert"}')), "--out", str(t / "e")], "model_type 'bert' is not a backend"),
    ("model: truncated safetensors", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], _truncate), "--out", str(t / "e")], "model.safetensors: truncated"),
    ("model: safetensors of another model", lambda t, d: ["judge", "--model", model_copy(t, d["janus"], lambda m: shutil.copy(d["janus32"] / "model.safetensors", m)), "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": RGB}), "--out", str(t / "j.jsonl")], "model.safetensors: does not hold the Janus model its config.json describes"),
    ("model: no tokenizer", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], lambda m: (m / "tokenizer.json").unlink()), "--out", str(t / "e")], "no tokenizer"),
    ("model: only pickle weights", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], _pickle_only), "--out", str(t / "e")], "only pickle weights (pytorch_model.bin)"),
    ("model: srum.json question without a slot", lambda t, d: ["eval", "--model", model_copy(t, d["janus"], lambda m: (m / "srum.json").write_text('{"question": "q"}')), "--out", str(t / "e")], "needs a {} where the prompt goes"),
    # manifests and images
    ("manifest: missing", lambda t, d: ["world", "check", "--manifest", str(t / "nope.jsonl")], "no such file"),
    ("manifest: a row without 'file'", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"prompt": "a red square"}])], "manifest.jsonl:1: missing string field 'file'"),
    ("manifest: an image that is not there", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"file": "x.png", "prompt": "a red square"}])], "image 'x.png' not found"),
    ("image: unreadable bytes", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": b"\x89PNG garbage"})], "a.png: not a readable image"),
    ("image: another size", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": np.zeros((16, 16, 3), np.uint8)})], "CompWorld images are 32x32; got 16x16"),
    ("image: grey, not RGB", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": np.zeros((32, 32), np.uint8)})], "CompWorld images are RGB; got mode L"),
    ("image: transparent pixels", lambda t, d: ["world", "check", "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": np.zeros((32, 32, 4), np.uint8)})], "transparent pixels"),
    ("judge: an unreadable image", lambda t, d: ["judge", "--model", str(d["janus32"]), "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": b"not a png"}), "--out", str(t / "j.jsonl")], "a.png: not a readable image"),
    # run directories
    ("train --out names a file", lambda t, d: ["train", "--out", _file(t / "run.txt"), "--set", f"model={d['janus32']}"], "is a file, not a run directory"),
    ("eval --out names a file", lambda t, d: ["eval", "--model", str(d["janus32"]), "--out", _file(t / "e.txt")], "is a file, not a directory"),
    ("judge --out names a directory", lambda t, d: ["judge", "--model", str(d["janus32"]), "--manifest", manifest(t, [{"file": "a.png", "prompt": "a red square"}], {"a.png": RGB}), "--out", str(t)], "is a directory"),
    ("train: a dangling latest", lambda t, d: ["train", "--engine", "local", "--out", run_dir(t, d["janus32"]), "--set", f"model={d['janus32']}"], "names 'step_000004', which is missing or incomplete"),
    ("train: a config that disagrees with the run's", lambda t, d: ["train", "--engine", "local", "--out", run_dir(t, d["janus32"], complete=True), "--set", f"model={d['janus32']}", "--set", "seed=5"], "seed: the run was started with 0, this command says 5"),
    ("status: not a run directory", lambda t, d: ["status", str(t)], "not a srum run directory"),
]


def _yaml(tmp, text):
    (tmp / "cfg.yaml").write_text(text)
    return str(tmp / "cfg.yaml")


def _file(path):
    path.write_text("keep me\n")
    return str(path)


def _truncate(m):
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])


def _pickle_only(m):
    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")


@pytest.mark.parametrize("name,argv,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(name, argv, message, tmp_path, capsys, tiny_janus_dir, tiny_janus32_dir):
    args = argv(tmp_path, {"janus": tiny_janus_dir, "janus32": tiny_janus32_dir})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    for p, data in before.items():  # nothing already on disk was changed or removed
        assert p.exists() and p.read_bytes() == data, p


def test_there_are_at_least_forty_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40
