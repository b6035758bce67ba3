"""Unified multimodal model backends behind one protocol (docs/architecture.md, "Adding a backend"):

    sample(prompts, seed, opts) -> (images uint8 (B, H, W, 3), latents)   # latents: what the loss re-scores
      "tokens" backends also sample(..., logprobs=True) -> (images, tokens, each token's log p)  # issue 39's check
    judge_yes_prob(images, questions) -> np.ndarray                        # P(yes); a score in [-1, 1] is 2p - 1
    question(prompt) -> str                                                # the judge's yes/no question
    image_size; judge_sides (optional) -> (lo, hi)                         # sides judge_yes_prob takes (else 32..image_size)
    objective: "tokens" -> image_logits(prompts, tokens)                   # autoregressive image tokens
               "flow"   -> flow_inputs(latents, generator), velocity(x_t, t, prompts)
    autocast(), reference_view(reference), make_reference(), trainable(mode), token_grid
    flat_weights() / flatten_parameters() / load_flat_weights(flat, version)   # one flat buffer, for broadcast
    save(dir) / load(dir) / load_state(dir)

Models compute; they know nothing of the objective, CompWorld, Ray or the CLI. One folder per backend:
`janus` (transformers' Janus / Janus-Pro; the built-in is a tiny Janus trained on CompWorld) and `bagel`
(BAGEL-7B-MoT's release layout: rectified flow with a mixture-of-transformers; docs/bagel-format.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import DEVICE
from ..io import ModelDirError
from .device import DeviceError, resolve_device
from .sampling import SampleOptions

PACKAGE = Path(__file__).parent
BUILTINS = {"builtin": PACKAGE / "builtin"}
BUILTIN_DIR = BUILTINS["builtin"]


def _janus(d: Path):
    from .janus import JanusUMM

    return JanusUMM.load(d)


def _bagel(d: Path, device: str):
    import torch

    from .bagel import BagelUMM

    # bf16 weights on a GPU, as the release ships them; fp32 on the CPU, the bit-exact reference
    return BagelUMM.load(d, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)


# backend -> its loader. Janus: model_type in config.json; a LoRA checkpoint (srum.json and adapters, no config.json)
# names its base, a Janus directory. BAGEL: its release layout (llm_config.json, ema.safetensors), whatever a
# config.json beside them says.
BACKENDS = {"janus": lambda d, device: _janus(d), "bagel": _bagel}
BAGEL_FILES = ("llm_config.json", "ema.safetensors")
# what each backend's `trainable` accepts (learner.train), known without importing it: `lora` where it has `add_lora`
# (tests/models/bagel/test_bagel_loop.py checks the table against the classes)
TRAIN_MODES = {"janus": ("generation", "all", "lora"), "bagel": ("generation", "lora")}


def train_modes(backend: str) -> tuple[str, ...]:
    """The learner.train modes a backend supports."""
    return TRAIN_MODES[backend]


def model_dir(name: str | Path = "builtin") -> Path:
    """The directory a model name stands for: 'builtin' (a tiny Janus) ships in the package."""
    return BUILTINS.get(str(name), Path(name))


def weights_sha256(name: str | Path = "builtin") -> str:
    """Which weights a model name holds: the SHA-256 of its model.safetensors."""
    return hashlib.sha256((model_dir(name) / "model.safetensors").read_bytes()).hexdigest()


def backend_of(d: Path) -> str:
    """The backend that loads directory `d`: BAGEL by its release files (either of BAGEL_FILES), else config.json's
    model_type; a clear error for anything else."""
    if any((d / f).exists() for f in BAGEL_FILES):  # the strict loader then names any release file that is absent
        return "bagel"
    if (d / "srum.json").exists() and not (d / "config.json").exists():
        return "janus"  # a LoRA checkpoint: adapters + srum.json naming the base
    if not (d / "config.json").exists():
        what = "the shipped checkpoint is missing from the package" if d in BUILTINS.values() else "not a model directory"
        raise ModelDirError(f"{d}: {what} (no config.json)")
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{d / 'config.json'}: not valid JSON ({e})") from None
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind not in BACKENDS:
        raise ModelDirError(f"{d / 'config.json'}: model_type {kind!r} is not a backend srum has ({', '.join(BACKENDS)})")
    return kind


def check_model(name: str | Path = "builtin") -> None:
    """The strict checks loading would make that need no weights read (names, shapes, dtypes on the safetensors
    headers; a LoRA checkpoint's base): what `srum train` refuses before a Ray instance starts. A ModelDirError."""
    d = model_dir(name)
    if backend_of(d) == "janus":
        from .janus.directory import check_janus

        check_janus(d)


def load_model(name: str | Path = "builtin", device: str = "cpu"):
    """'builtin' or a local model directory. Never a hub. `device`: cpu, cuda[:i] or auto."""
    d = model_dir(name)
    device = resolve_device(device)
    return BACKENDS[backend_of(d)](d, device).to(device)


__all__ = ["BACKENDS", "BUILTINS", "BUILTIN_DIR", "DEVICE", "DeviceError", "ModelDirError", "SampleOptions", "backend_of",
           "check_model", "load_model", "model_dir", "resolve_device", "train_modes", "weights_sha256"]
