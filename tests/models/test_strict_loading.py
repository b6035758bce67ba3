"""Issue 39, strict loading: a model directory whose tensors are not the ones its config implies is refused by the
command line with exit 2, the directory, the file and the first differing tensors named, and nothing written.
bench/faults.py --parts strict_loading records these cases' errors (docs/results/reliability.md)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from srum.cli import main

TENSOR = "model.generation_head.proj_out.bias"  # the tensor the single-tensor cases change


def _weights(m: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    f = m / "model.safetensors"
    save_file(change(load_file(str(f))), str(f), metadata={"format": "pt"})


def janus_copy(tmp: Path, src: Path, change) -> Path:
    m = tmp / "model"
    shutil.copytree(src, m)
    _weights(m, change)
    return m


def lora_checkpoint(tmp: Path, base: Path, name: str = "lora") -> Path:
    """A LoRA checkpoint as srum saves one (adapters on q_proj, srum.json naming `base`)."""
    from srum.models import load_model

    model = load_model(base)
    model.add_lora(rank=2, targets=["q_proj"])
    model.save(tmp / name)
    return tmp / name


def lora_other_modules(tmp, d):
    from safetensors.torch import load_file, save_file

    lo = lora_checkpoint(tmp, d["janus32"])
    f = lo / "adapter" / "adapter_model.safetensors"
    save_file({k.replace("q_proj", "k_proj"): v for k, v in load_file(str(f)).items()}, str(f))
    return lo


def lora_another_base(tmp, d):
    lo = lora_checkpoint(tmp, d["janus32"])
    s = json.loads((lo / "srum.json").read_text())
    other = shutil.copytree(d["janus32"], tmp / "other_base")
    _weights(other, lambda t: {k: v + 0.01 for k, v in t.items()})  # the same shapes, other weights
    (lo / "srum.json").write_text(json.dumps({**s, "base": str(other)}))
    return lo


def srum_checkpoint(tmp: Path, src: Path) -> Path:
    """A run directory with a checkpoint that srum wrote (step 4), its model.safetensors then cut short."""
    from srum.config import TrainConfig, dump_config, load_config
    from srum.models import load_model

    run = tmp / "run"
    m = run / "checkpoints" / "step_000004" / "model"
    load_model(src).save(m)
    (run / "config.yaml").write_text(dump_config(load_config(TrainConfig, None, [f"model={src}"])))
    (m.parent / "state.json").write_text(json.dumps({"step": 4, "policy_version": 4, "data_position": 16, "learned_ahead": []}))
    (run / "checkpoints" / "latest").write_text("step_000004\n")
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    return run


def vllm_judge_mismatch(tmp, d):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_vlm import build_tiny_qwen2vl

    q = build_tiny_qwen2vl(tmp / "judge")
    cfg = json.loads((q / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 96  # the config says MLPs of 96; the weights hold 128
    (q / "config.json").write_text(json.dumps(cfg))
    return q


def _eval(m):
    return ["eval", "--model", str(m), "--out", str(m.parent / "out")]


def _drop(t):
    return {k: v for k, v in t.items() if k != TENSOR}


# (name, argv builder (tmp, dirs), fragments the error must hold: the file and the first differing tensor)
CASES = [
    ("no tensor of the config", lambda t, d: _eval(janus_copy(t, d["janus32"], lambda w: {"unrelated.weight": torch.zeros(3)})),
     ["model/model.safetensors: does not hold the Janus model", "238 missing (first: lm_head.weight", "1 unexpected (first: unrelated.weight)"]),
    ("one tensor missing", lambda t, d: _eval(janus_copy(t, d["janus32"], _drop)), ["model/model.safetensors", f"1 missing (first: {TENSOR})"]),
    ("one tensor extra", lambda t, d: _eval(janus_copy(t, d["janus32"], lambda w: {**w, "model.extra.weight": torch.zeros(2)})),
     ["model/model.safetensors", "1 unexpected (first: model.extra.weight)"]),
    ("one tensor of the wrong shape", lambda t, d: _eval(janus_copy(t, d["janus32"], lambda w: {**w, TENSOR: torch.zeros(5)})),
     ["model/model.safetensors", f"1 of the wrong shape (first: {TENSOR} [5] (expected [32]))"]),
    ("the wrong dtype", lambda t, d: _eval(janus_copy(t, d["janus32"], lambda w: {k: v.half() for k, v in w.items()})),
     ["model/model.safetensors: 238 tensors are not F32, the dtype its config declares", "lm_head.weight F16"]),
    ("a LoRA adapter for other modules", lambda t, d: _eval(lora_other_modules(t, d)),
     ["lora/adapter/adapter_model.safetensors: does not hold the LoRA adapters", "4 missing (first: base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight",
      "4 unexpected (first: base_model.model.model.language_model.layers.0.self_attn.k_proj.lora_A.weight"]),
    ("a LoRA adapter for another base", lambda t, d: _eval(lora_another_base(t, d)),
     ["lora/srum.json: base", "other_base is not the model the adapters in", "were trained on"]),
    ("srum eval of a truncated checkpoint srum wrote", lambda t, d: _eval(srum_checkpoint(t, d["janus32"]) / "checkpoints" / "step_000004" / "model"),
     ["run/checkpoints/step_000004/model/model.safetensors: truncated"]),
    ("resuming from a truncated checkpoint srum wrote", lambda t, d: ["train", "--engine", "local", "--out", str(srum_checkpoint(t, d["janus32"])),
                                                                     "--set", f"model={d['janus32']}"],
     ["run/checkpoints/step_000004/model/model.safetensors: truncated"]),
    ("a vLLM judge directory that does not match its config", lambda t, d: [
        "train", "--engine", "ray", "--out", str(t / "r"), "--set", f"model={d['janus32']}", "--set", "reward.judge.engine=vllm",
        "--set", f"reward.judge.model={vllm_judge_mismatch(t, d)}"],
     ["reward.judge.model:", "judge/model.safetensors: does not hold the Qwen2VLForConditionalGeneration its config.json describes",
      "of the wrong shape (first: model.language_model.layers.0.mlp.down_proj.weight [64, 128] (expected [64, 96])"]),
]


def run_case(argv, tmp: Path, dirs: dict) -> tuple[int, str, list[str]]:
    """(exit code, stderr, files the command wrote) of one case."""
    import contextlib
    import io

    args = argv(tmp, dirs)
    before = {p: p.stat().st_mtime_ns for p in tmp.rglob("*") if p.is_file()}
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    written = sorted(str(p) for p in tmp.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns)
    return code, err.getvalue(), written


@pytest.mark.parametrize("name,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_a_model_directory_that_is_not_its_config_is_refused(name, argv, fragments, tmp_path, tiny_janus32_dir):
    code, err, written = run_case(argv, tmp_path, {"janus32": tiny_janus32_dir})
    assert code == 2, err
    assert "Traceback" not in err and all(f in err for f in fragments), err
    assert written == []  # no image, no checkpoint, no run directory
    assert not (tmp_path / "model" / "out").exists() and not (tmp_path / "r").exists()


def test_a_checkpoint_srum_saved_loads_back_strictly(tiny_janus32_dir, tmp_path):
    """What srum writes passes its own checks: a full checkpoint and a LoRA one (with its base's fingerprint)."""
    from srum.models import check_model, load_model

    m = load_model(tiny_janus32_dir)
    m.save(tmp_path / "full")
    check_model(tmp_path / "full")
    assert torch.equal(load_model(tmp_path / "full").flat_weights(), m.flat_weights())
    lo = lora_checkpoint(tmp_path, tiny_janus32_dir)
    check_model(lo)
    assert "base_fingerprint" in json.loads((lo / "srum.json").read_text()) and load_model(lo).peft is not None


def test_a_detector_directory_is_checked_against_its_config(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_vlm import build_tiny_owlv2

    from srum.io import ModelDirError
    from srum.models.strict import check_hf_dir

    d = build_tiny_owlv2(tmp_path / "owl")
    check_hf_dir(d, "reward.proposer")
    _weights(d, lambda t: {k: v for k, v in t.items() if k != "box_head.dense0.bias"})
    with pytest.raises(ModelDirError, match=r"owl/model.safetensors: does not hold the Owlv2ForObjectDetection .* 1 missing \(first: box_head.dense0.bias\)"):
        check_hf_dir(d, "reward.proposer")
