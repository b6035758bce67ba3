"""What a Janus directory must hold before transformers opens it, and srum's own settings beside it (srum.json).
Every failure is a ModelDirError naming the directory or file and the reason."""

from __future__ import annotations

import json
from pathlib import Path

from ...io import ModelDirError

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
    return cfg


def check_safetensors(f: Path) -> None:
    """A safetensors file whose header reads and whose size covers every tensor it declares (a truncated copy
    fails here with its name, not in the middle of a load)."""
    import struct

    size = f.stat().st_size
    try:
        with f.open("rb") as h:
            n = struct.unpack("<Q", h.read(8))[0]
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(h.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{f}: not a readable safetensors file ({e})") from None
    if 8 + n + end > size:
        raise ModelDirError(f"{f}: truncated ({size} bytes; its header declares {8 + n + end})")


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
