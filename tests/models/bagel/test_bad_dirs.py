"""Directories that are not BAGEL releases: a clear ModelDirError naming the file and what differs."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from srum.io import ModelDirError
from srum.models.bagel import BagelUMM

from . import tiny


def rewrite(path, change):
    tensors = load_file(str(path))
    save_file(change(tensors), str(path))


def test_missing_file(bagel_copy):
    (bagel_copy / "ae.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"missing ae\.safetensors"):
        BagelUMM.load(bagel_copy)


def test_ema_without_the_generation_expert(bagel_copy):
    rewrite(bagel_copy / "ema.safetensors", lambda t: {k: v for k, v in t.items() if "_moe_gen" not in k})
    with pytest.raises(ModelDirError, match=r"ema\.safetensors.*missing; the generation expert \(\*_moe_gen\) is absent"):
        BagelUMM.load(bagel_copy)


def test_vit_config_that_does_not_say_one_layer_more(bagel_copy):
    raw = json.loads((bagel_copy / "vit_config.json").read_text())
    (bagel_copy / "vit_config.json").write_text(json.dumps(raw | {"num_hidden_layers": raw["num_hidden_layers"] - 1}))
    with pytest.raises(ModelDirError, match=r"unexpected \(first: vit_model\.vision_model\.encoder\.layers\.1\."):
        BagelUMM.load(bagel_copy)


def test_ema_with_a_wrong_shape(bagel_copy):
    rewrite(bagel_copy / "ema.safetensors", lambda t: t | {"vae2llm.bias": torch.zeros(3, dtype=torch.bfloat16)})
    with pytest.raises(ModelDirError, match=r"wrong shape \(first: vae2llm\.bias \[3\] \(expected \[64\]\)"):
        BagelUMM.load(bagel_copy)


def test_ae_in_diffusers_names(bagel_copy):
    save_file(tiny.random_ae(0).state_dict(), str(bagel_copy / "ae.safetensors"))
    with pytest.raises(ModelDirError, match=r"ae\.safetensors: not a FLUX autoencoder in BFL's names"):
        BagelUMM.load(bagel_copy)


def test_ae_with_quant_convs(bagel_copy):
    extra = {"quant_conv.weight": torch.zeros(8, 8, 1, 1), "quant_conv.bias": torch.zeros(8)}
    rewrite(bagel_copy / "ae.safetensors", lambda t: t | extra)
    with pytest.raises(ModelDirError, match=r"ae\.safetensors: does not hold a FLUX autoencoder.*2 unexpected"):
        BagelUMM.load(bagel_copy)


def test_tokenizer_without_the_special_tokens(bagel_copy):
    tiny.write_tokenizer(bagel_copy, specials=["<|endoftext|>"])
    with pytest.raises(ModelDirError, match=r"tokenizer\.json: lacks BAGEL's special tokens <\|im_start\|>, <\|im_end\|>, "
                                            r"<\|vision_start\|>, <\|vision_end\|>"):
        BagelUMM.load(bagel_copy)


def test_not_safetensors(bagel_copy):
    (bagel_copy / "ema.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelDirError, match=r"ema\.safetensors: not a readable safetensors file"):
        BagelUMM.load(bagel_copy)


def test_no_directory(tmp_path):
    with pytest.raises(ModelDirError, match="no such model directory"):
        BagelUMM.load(tmp_path / "absent")


# ---- the same directories through the CLI: `srum eval --model DIR` exits 2, names what is wrong, writes nothing ----

def _no_file(d):
    (d / "ema.safetensors").unlink()
    (d / "config.json").unlink()  # known as BAGEL by llm_config.json alone: the strict loader names the absent file


def _no_generation_expert(d):
    rewrite(d / "ema.safetensors", lambda t: {k: v for k, v in t.items() if "_moe_gen" not in k})


def _ae_in_diffusers_names(d):
    save_file(tiny.random_ae(0).state_dict(), str(d / "ae.safetensors"))


def _tokenizer_without_specials(d):
    tiny.write_tokenizer(d, specials=["<|endoftext|>"])


@pytest.mark.parametrize("damage, message", [
    (_no_file, r"not a BAGEL release directory: missing ema\.safetensors"),
    (_no_generation_expert, r"ema\.safetensors: does not hold the BAGEL network.*the generation expert \(\*_moe_gen\) is absent"),
    (_ae_in_diffusers_names, r"ae\.safetensors: not a FLUX autoencoder in BFL's names"),
    (_tokenizer_without_specials, r"tokenizer\.json: lacks BAGEL's special tokens <\|im_start\|>, <\|im_end\|>, "
                                  r"<\|vision_start\|>, <\|vision_end\|>"),
])
def test_cli_eval_refuses_a_bad_directory_by_name(bagel_copy, tmp_path, capsys, damage, message):
    import re

    from srum.cli import main

    damage(bagel_copy)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red square"}\n')
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(bagel_copy), "--prompts", str(prompts), "--out", str(out), "--steps", "1",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("srum: error: ") and str(bagel_copy) in err and re.search(message, err), err
    assert "Traceback" not in err and not out.exists()
