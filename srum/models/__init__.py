"""Unified multimodal model backends behind one protocol (see docs/architecture.md):

    sample(prompts, seed, opts) -> (images uint8 (B, H, W, 3), latents)   # latents: what the loss re-scores
    judge_yes_prob(images, questions) -> np.ndarray                        # P(yes); a score in [-1, 1] is 2p - 1
    question(prompt) -> str                                                # the judge's yes/no question
    srum_loss(latents, prompts, token_weights, reference, kl_coef, generator, rows, push_margin) at `token_grid`
    trainable(mode) -> names; make_reference() -> the frozen reference the loss reads
    flat_weights() / flatten_parameters() / load_flat_weights(flat, version)   # one flat buffer, for broadcast
    save(dir) / load(dir) / load_state(dir)

Backends: `janus` (transformers' Janus / Janus-Pro: autoregressive image tokens; the built-in is a tiny
Janus trained on CompWorld) and `mot` (the first built-in: a mixture-of-transformers with rectified flow).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .device import DEVICE, DeviceError, resolve_device
from .janus import ModelDirError
from .sampling import SampleOptions

PACKAGE = Path(__file__).parent
BUILTINS = {"builtin": PACKAGE / "builtin", "builtin-mot": PACKAGE / "builtin_mot"}
BUILTIN_DIR = BUILTINS["builtin"]


def model_dir(name: str | Path = "builtin") -> Path:
    """The directory a model name stands for: 'builtin' (a tiny Janus) and 'builtin-mot' ship in the package."""
    return BUILTINS.get(str(name), Path(name))


def weights_sha256(name: str | Path = "builtin") -> str:
    """Which weights a model name holds: the SHA-256 of its model.safetensors."""
    return hashlib.sha256((model_dir(name) / "model.safetensors").read_bytes()).hexdigest()


def backend_of(d: Path) -> str:
    """'janus' for a transformers Janus directory (or a LoRA checkpoint of one), 'mot' for srum's own."""
    if (d / "srum.json").exists() and not (d / "config.json").exists():
        return "janus"  # a LoRA checkpoint: adapters + srum.json naming the base
    if not (d / "config.json").exists():
        what = "the shipped checkpoint is missing from the package" if d in BUILTINS.values() else "not a model directory"
        raise ModelDirError(f"{d}: {what} (no config.json)")
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{d / 'config.json'}: not valid JSON ({e})") from None
    kind = cfg.get("kind") or cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind not in ("janus", "mot"):
        raise ModelDirError(f"{d / 'config.json'}: model_type {kind!r} is not a backend srum has (janus, or srum's mot)")
    return kind


def load_model(name: str | Path = "builtin", device: str = "cpu"):
    """'builtin', 'builtin-mot' or a local model directory. Never a hub. `device`: cpu, cuda[:i] or auto."""
    d = model_dir(name)
    device = resolve_device(device)
    if backend_of(d) == "janus":
        from .janus import JanusUMM

        return JanusUMM.load(d).to(device)
    from .mot import MotUMM

    return MotUMM.load(d).to(device)


__all__ = ["BUILTINS", "BUILTIN_DIR", "DEVICE", "DeviceError", "ModelDirError", "SampleOptions", "backend_of",
           "load_model", "model_dir", "resolve_device", "weights_sha256"]
