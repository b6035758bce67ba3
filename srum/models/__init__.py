"""Unified multimodal model backends behind one protocol (see docs/architecture.md):

    generate(prompts, n, seed, opts) -> list[Rollout]      # with what the loss needs to re-score them
    judge_yes_prob(images, questions) -> np.ndarray        # P(yes); a score in [-1, 1] is 2p - 1
    flat_weights() / load_flat_weights(flat, version)      # one flat buffer, for broadcast
    flatten_parameters() -> flat                           # weights as views of one buffer (the learner's)
    save(dir) / load(dir)                                  # config.json + model.safetensors + tokenizer
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..io import InputError
from .mot import MotUMM, SampleOptions

BUILTIN_DIR = Path(__file__).parent / "builtin"
BACKENDS = {"mot": MotUMM}


def resolve_device(device: str = "auto") -> str:
    """"auto": CUDA where torch sees a GPU (inside a Ray actor: one Ray gave it), else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA device here")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"device {device!r}: expected cpu, cuda, cuda:N or auto")
    return device


def model_dir(name: str | Path = "builtin") -> Path:
    """The directory a model name stands for: 'builtin' is the checkpoint shipped in the package."""
    return BUILTIN_DIR if str(name) == "builtin" else Path(name)


def weights_sha256(name: str | Path = "builtin") -> str:
    """Which weights a model name holds: the SHA-256 of its model.safetensors."""
    return hashlib.sha256((model_dir(name) / "model.safetensors").read_bytes()).hexdigest()


def load_model(name: str | Path = "builtin", device: str = "cpu"):
    """'builtin' (the checkpoint shipped in the package) or a local model directory. Never a hub.
    `device`: cpu, cuda[:i] or auto (see resolve_device)."""
    d = model_dir(name)
    if not (d / "config.json").exists():
        what = "the shipped built-in checkpoint is missing from the package" if str(name) == "builtin" else "not a model directory"
        raise FileNotFoundError(f"{d}: {what} (expected config.json, model.safetensors, tokenizer.json)")
    kind = json.loads((d / "config.json").read_text()).get("kind", "mot")
    if kind not in BACKENDS:
        raise ValueError(f"{d}/config.json: unknown model kind {kind!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[kind].load(d).to(resolve_device(device))


__all__ = ["BUILTIN_DIR", "MotUMM", "SampleOptions", "load_model", "model_dir", "resolve_device", "weights_sha256"]
