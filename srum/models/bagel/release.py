"""A BAGEL release directory, read strictly and written in the same layout.

    llm_config.json   Qwen2 config of the language model
    vit_config.json   SigLIP config (says one layer more than the weights hold)
    ema.safetensors   every weight of the network (bf16 in the release)
    ae.safetensors    the FLUX autoencoder in BFL's names (fp32)
    tokenizer.json    Qwen2.5's tokenizer, with <|im_start|> <|im_end|> <|vision_start|> <|vision_end|>
    ...               other small files (vocab.json, merges.txt, config.json, README.md) are carried as they are
    srum.json         optional: srum's judge settings and the policy version

Strict: every tensor the configs imply is in the file, nothing else is, shapes match, and each file's
tensors share one floating dtype. Anything else is a ModelDirError naming the directory, the file and the
first tensors that differ. Only safetensors are read or written: no pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...io import ModelDirError, replace_dir
from ..strict import Header, differences, header
from . import autoencoder
from .config import (
    ANSWERS,
    QUESTION,
    SPECIAL_TOKENS,
    BagelConfig,
    llm_config,
    read_json,
    vit_config,
)
from .modeling import BagelNet

REQUIRED = ("llm_config.json", "vit_config.json", "ema.safetensors", "ae.safetensors", "tokenizer.json")
SRUM_FILE = "srum.json"
DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
CARRIED_MAX_BYTES = 64 << 20  # small files travel with the model; anything bigger is not a config


@dataclass
class Release:
    """What a directory holds, loaded."""

    cfg: BagelConfig
    net: BagelNet
    ae: torch.nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    special_ids: dict[str, int]
    weights_dtype: torch.dtype  # ema.safetensors' dtype: what `save` writes back
    settings: dict = field(default_factory=dict)
    carried: dict[str, bytes] = field(default_factory=dict)  # small files copied as they are on save


def check_tensors(path: Path, expected: dict[str, tuple[int, ...]], found: Header, what: str) -> torch.dtype:
    """Raise a ModelDirError unless `found` is exactly `expected` (names and shapes: `strict.differences`) in one
    float dtype, which it returns."""
    def hint(missing):
        return "; the generation expert (*_moe_gen) is absent" if any("_moe_gen" in k and "lora_" not in k for k in missing) else ""

    problems = differences(expected, found, hint=hint)
    if problems:
        raise ModelDirError(f"{path}: does not hold {what}: {' / '.join(problems)}")
    dtypes = {d for _, d in found.values()}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise ModelDirError(f"{path}: expected every tensor in one of {sorted(DTYPES)}; found {sorted(dtypes)}")
    return DTYPES[dtypes.pop()]


def read_tokenizer(d: Path):
    """tokenizer.json, which must know the four special tokens BAGEL's chat format is made of."""
    from tokenizers import Tokenizer

    path = d / "tokenizer.json"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exceptions for a bad file
        raise ModelDirError(f"{path}: not a readable tokenizer ({str(e)[:200]})") from None
    ids = {role: tok.token_to_id(text) for role, text in SPECIAL_TOKENS.items()}
    absent = [SPECIAL_TOKENS[r] for r, i in ids.items() if i is None]
    if absent:
        raise ModelDirError(f"{path}: lacks BAGEL's special tokens {', '.join(absent)} "
                            f"(needs all of {', '.join(SPECIAL_TOKENS.values())})")
    return tok, ids


def read_settings(d: Path) -> dict:
    """srum.json: the judge's question template and answer words, the policy version. Optional."""
    path = d / SRUM_FILE
    settings = {"question": QUESTION, "yes": ANSWERS[0], "no": ANSWERS[1], "policy_version": 0}
    if not path.exists():
        return settings
    raw = read_json(path)
    if any(not isinstance(raw.get(k, ""), str) for k in ("question", "yes", "no")):
        raise ModelDirError(f"{path}: question, yes and no must be strings")
    if "{}" not in raw.get("question", "{}"):
        raise ModelDirError(f"{path}: question: needs a {{}} where the prompt goes")
    return settings | raw


def read_config(d: Path) -> tuple[BagelConfig, dict, dict]:
    """The config, and the headers of ema and ae (read once, reused by the strict check)."""
    llm = llm_config(read_json(d / "llm_config.json"), d / "llm_config.json")
    vit = vit_config(read_json(d / "vit_config.json"), d / "vit_config.json")
    ema, ae = header(d / "ema.safetensors"), header(d / "ae.safetensors")
    shape = autoencoder.read_shape({k: s for k, (s, _) in ae.items()}, str(d / "ae.safetensors"))
    cfg = BagelConfig(llm=llm, vit=vit, ae=shape, max_latent_size=latent_table_side(ema, d / "ema.safetensors"))
    return cfg, ema, ae


def latent_table_side(ema: dict, path: Path) -> int:
    """The latent position table's side, from its rows (64^2 in the release, whatever config.json says)."""
    entry = ema.get("latent_pos_embed.pos_embed")
    if entry is None:
        raise ModelDirError(f"{path}: no latent_pos_embed.pos_embed (the generation side is absent)")
    rows = entry[0][0]
    side = round(rows**0.5)
    if side * side != rows:
        raise ModelDirError(f"{path}: latent_pos_embed.pos_embed has {rows} rows, not a square grid")
    return side


def load(directory: Path, dtype: torch.dtype = torch.float32) -> Release:
    d = Path(directory)
    if not d.is_dir():
        raise ModelDirError(f"{d}: no such model directory")
    absent = [f for f in REQUIRED if not (d / f).is_file()]
    if absent:
        raise ModelDirError(f"{d}: not a BAGEL release directory: missing {', '.join(absent)} (it needs {', '.join(REQUIRED)})")
    tokenizer, special_ids = read_tokenizer(d)
    cfg, ema_header, ae_header = read_config(d)
    net = build_net(cfg)
    weights_dtype = check_tensors(d / "ema.safetensors", {k: tuple(v.shape) for k, v in net.state_dict().items()},
                                  ema_header, "the BAGEL network its llm_config.json and vit_config.json describe")
    levels = len(cfg.ae.widths)
    ae = autoencoder.build(cfg.ae)
    check_tensors(d / "ae.safetensors", autoencoder.expected(ae, levels), ae_header, "a FLUX autoencoder (BFL's names)")
    too_big = [k for k, i in special_ids.items() if i >= cfg.llm.vocab_size]
    if too_big:
        raise ModelDirError(f"{d / 'tokenizer.json'}: special token ids beyond the embedding's {cfg.llm.vocab_size} rows ({too_big})")
    from safetensors.torch import load_file

    net = fill_net(net, cfg, load_file(str(d / "ema.safetensors")), dtype)
    autoencoder.load_bfl(ae, load_file(str(d / "ae.safetensors")), levels)
    return Release(cfg, net, ae.eval().requires_grad_(False), tokenizer, special_ids, weights_dtype,
                   read_settings(d), carried_files(d))


def build_net(cfg: BagelConfig) -> BagelNet:
    """The network's skeleton on the meta device: shapes only, no memory, no random init."""
    with torch.device("meta"):
        return BagelNet(cfg)


def fill_net(net: BagelNet, cfg: BagelConfig, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> BagelNet:
    """Give the meta skeleton the file's tensors (in `dtype`); rebuild the rotary table, which no file holds."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    net.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True, assign=True)
    net.language_model.model.rotary_emb = Qwen2RotaryEmbedding(cfg.llm)
    return net.eval()


def carried_files(d: Path) -> dict[str, bytes]:
    """The directory's other small files, carried unchanged by `save`."""
    out = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and p.suffix != ".safetensors" and p.name != SRUM_FILE and not p.name.startswith("."):
            if p.stat().st_size <= CARRIED_MAX_BYTES:
                out[p.name] = p.read_bytes()
    return out


def save(directory: Path, ema: dict[str, torch.Tensor], ae_tensors: dict[str, torch.Tensor], carried: dict[str, bytes],
         settings: dict, dtype: torch.dtype, extra: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Write a release directory beside the target and rename it into place: a reader sees the old directory
    or the new one, never half of one. `extra`: more safetensors files (name -> tensors, kept in their dtype)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".{d.name}."))
    try:
        for name, data in carried.items():
            (tmp / name).write_bytes(data)
        save_file({k: v.detach().to("cpu", dtype).contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"),
                  metadata={"format": "pt"})
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in ae_tensors.items()},
                  str(tmp / "ae.safetensors"), metadata={"format": "pt"})
        for name, tensors in (extra or {}).items():
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / name),
                      metadata={"format": "pt"})
        (tmp / SRUM_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a model directory is meant to be shared
        replace_dir(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
