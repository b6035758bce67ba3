"""What a Janus directory must hold before transformers opens it, and srum's own settings beside it (srum.json).
Every failure is a ModelDirError naming the directory or file and the reason."""

from __future__ import annotations

import json
from pathlib import Path

from ...io import ModelDirError
from ..strict import check_dtype, check_safetensors, differences, expected_of, header

SRUM_FILE = "srum.json"
DEFAULTS = {"question": "Does the image show {}? Answer yes or no.", "yes": "Yes", "no": "No"}


def check_model_dir(d: Path) -> dict:
    """The parsed config.json of a loadable Janus directory, or a ModelDirError naming what is wrong. Pickle
    weights are refused by name and never opened."""
    if not d.is_dir():
        raise ModelDirError(f"{d}: no such model directory")
    cfg_file = d / "config.json"
    if not cfg_file.exists():
        raise ModelDirError(f"{d}: not a model directory (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{cfg_file}: expected a JSON object")
    if not list(d.glob("*.safetensors")):
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        why = f"only pickle weights ({', '.join(pickles)}), which srum never loads: convert them to safetensors" if pickles \
            else "no model.safetensors"
        raise ModelDirError(f"{d}: {why}")
    if not ((d / "tokenizer.json").exists() or (d / "tokenizer.model").exists()):
        raise ModelDirError(f"{d}: no tokenizer (tokenizer.json)")
    for f in sorted(d.glob("*.safetensors")):
        check_safetensors(f)
    check_tensors(d, cfg)
    return cfg


def check_tensors(d: Path, cfg: dict) -> None:
    """Every tensor the config implies is in the directory's safetensors, nothing else is, shapes as the config
    makes them, floats in the config's dtype: checked on the headers against the model built on the meta device
    (seconds, no memory), before transformers opens it (which would fill a missing tensor at random and only
    log it). Tied weights (e.g. lm_head with tie_word_embeddings) may be left out, as save_pretrained does."""
    import torch
    from transformers import JanusConfig, JanusForConditionalGeneration

    try:
        config = JanusConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
        with torch.device("meta"):
            net = JanusForConditionalGeneration._from_config(config)
    except Exception as e:  # noqa: BLE001 - a config transformers cannot build is the user's file
        raise ModelDirError(f"{d / 'config.json'}: not a Janus config transformers can build: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
    expected, tied = expected_of(net)
    files = sorted(d.glob("*.safetensors"))
    found, where = {}, {}
    for f in files:
        h = header(f)
        found.update(h)
        where.update(dict.fromkeys(h, f.name))
    problems = differences(expected, found, tied)
    if problems:
        names = str(files[0]) if len(files) == 1 else f"{d}: {', '.join(f.name for f in files)}"
        raise ModelDirError(f"{names}: does not hold the Janus model its config.json describes: {' / '.join(problems)}")
    dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    for f in files:
        check_dtype(d / f.name, {k: v for k, v in found.items() if where[k] == f.name},
                    getattr(torch, dtype) if isinstance(dtype, str) and hasattr(torch, dtype) else None)


def read_settings(d: Path) -> dict:
    f = d / SRUM_FILE
    if not f.exists():
        return {"base": str(d.resolve())}
    try:
        s = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(s, dict) or any(not isinstance(s.get(k, ""), str) for k in DEFAULTS):
        raise ModelDirError(f"{f}: expected an object with string fields {sorted(DEFAULTS)}")
    if "{}" not in s.get("question", "{}"):
        raise ModelDirError(f"{f}: question: needs a {{}} where the prompt goes")
    return {"base": str(d.resolve()), **s}


def base_fingerprint(d: Path) -> str:
    """A cheap identity of a base model directory, recorded with a LoRA adapter trained on it: config.json, and of
    each safetensors file its size, header and 64 strided 4 KiB blocks of its data (reads < 1 MiB whatever the
    model's size). Another model, or the same one changed since, gives another fingerprint (with near certainty)."""
    import hashlib

    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in sorted(d.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            for k in range(64):
                fh.seek(size * k // 64)
                h.update(fh.read(4096))
    return h.hexdigest()[:32]


def check_base(d: Path, settings: dict) -> Path:
    """The base directory a LoRA checkpoint names, refused when it is not the model the adapters were trained on."""
    base = Path(settings["base"])
    if not base.is_dir():
        raise ModelDirError(f"{d / SRUM_FILE}: base {base}: no such model directory (the adapters need the model they "
                            "were trained on)")
    want = settings.get("base_fingerprint")
    if want is not None and (got := base_fingerprint(base)) != want:
        raise ModelDirError(f"{d / SRUM_FILE}: base {base} is not the model the adapters in {d / settings['adapter']} were "
                            f"trained on (fingerprint {got}, recorded {want}): another model, or changed since")
    return base


def check_janus(d: Path) -> None:
    """What loading `d` would refuse, without loading the weights (headers only): a Janus directory, or a LoRA
    checkpoint's base and adapter file."""
    settings = read_settings(d)
    if not settings.get("adapter"):
        check_model_dir(d)
        return
    base = check_base(d, settings)
    check_model_dir(base)
    f = d / settings["adapter"] / "adapter_model.safetensors"
    if not f.is_file():
        raise ModelDirError(f"{f.parent}: not a LoRA adapter directory (no adapter_model.safetensors)")
    check_safetensors(f)
