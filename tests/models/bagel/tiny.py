"""Tiny random BAGEL release directories, in the release's layout: llm_config.json, vit_config.json (one ViT
layer more than the weights hold, as the release), ema.safetensors in bf16, ae.safetensors in fp32 with BFL's
names, and Qwen-style tokenizer files made here with `tokenizers` (a small byte-level BPE with the special
tokens). Default images are 96 x 96: a 6 x 6 latent position table of 16-pixel tokens."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from srum.models.bagel import autoencoder
from srum.models.bagel.config import AEShape, BagelConfig, llm_config, vit_config
from srum.models.bagel.modeling import BagelNet, sincos_table

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
LLM = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
       "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
       "vocab_size": 448, "torch_dtype": "bfloat16"}
VIT = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
       "num_hidden_layers": 3, "patch_size": 7, "image_size": 56, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
       "layer_norm_eps": 1e-6}
AE = AEShape(in_channels=3, out_channels=3, widths=(32, 32, 64, 64), num_res_blocks=1, z_channels=4)
LATENT_SIDE = 6
WORDS = ("a an the one two three red green blue yellow circle square triangle star left right of above below and "
         "does image show answer question using single word or phrase picture").split()


def corpus() -> list[str]:
    lines = ["Yes", "No", "Yes No yes no", "Does the image show a red circle? Answer the question using a single word or phrase."]
    lines += [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return lines * 20


def write_tokenizer(d: Path, specials: list[str] = SPECIALS) -> int:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    tok.save(str(d / "tokenizer.json"))
    tok.model.save(str(d))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 512, "add_prefix_space": False, "errors": "replace"}, indent=2))
    return tok.get_vocab_size()


def tiny_config() -> BagelConfig:
    return BagelConfig(llm=llm_config(LLM, Path("llm_config.json")), vit=vit_config(VIT, Path("vit_config.json")),
                       ae=AE, max_latent_size=LATENT_SIDE)


def random_net(cfg: BagelConfig, seed: int) -> BagelNet:
    """Random weights; the two position tables hold the official sin-cos values."""
    torch.manual_seed(seed)
    net = BagelNet(cfg)
    with torch.no_grad():
        net.vit_pos_embed.pos_embed.copy_(sincos_table(cfg.vit_max_patches_per_side, cfg.hidden_size))
        net.latent_pos_embed.pos_embed.copy_(sincos_table(cfg.max_latent_size, cfg.hidden_size))
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or "_norm" in name:
                p.add_(0.1 * torch.randn_like(p))  # not exactly ones, so a mix-up of experts shows
    return net


def random_ae(seed: int):
    torch.manual_seed(seed)
    return autoencoder.build(AE)


def build(d: Path, seed: int = 0) -> Path:
    """A tiny release directory at `d`."""
    d.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(d)
    assert vocab <= LLM["vocab_size"]  # the embedding has spare rows, as Qwen2.5's 152064 > 151665
    (d / "llm_config.json").write_text(json.dumps(LLM, indent=2))
    (d / "vit_config.json").write_text(json.dumps(VIT, indent=2))
    # the hub's config.json, read by vLLM-style loaders and not by BAGEL's: its max_latent_size is not the truth
    (d / "config.json").write_text(json.dumps({"model_type": "bagel", "max_latent_size": 32, "latent_patch_size": 2}))
    net = random_net(tiny_config(), seed)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in net.state_dict().items()}, str(d / "ema.safetensors"))
    save_file(autoencoder.bfl_state_dict(random_ae(seed), len(AE.widths)), str(d / "ae.safetensors"))
    return d
