"""LoRA adapters on BAGEL's generation expert, on disk: a checkpoint keeps them in adapters.safetensors (what a resume
reads: bit-exact, the base staying the run's initial model) beside ema.safetensors with them merged (what the official
loader, `srum eval` and `srum serve` read)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...io import ModelDirError
from . import release

ADAPTERS_FILE = "adapters.safetensors"


def load_adapters(model, d: Path) -> None:
    """Copy a checkpoint's adapters.safetensors into `model`'s LoRA adapters (shapes checked strictly)."""
    from safetensors.torch import load_file

    path = d / ADAPTERS_FILE
    if not path.is_file():
        raise ModelDirError(f"{d}: no {ADAPTERS_FILE}: not a checkpoint of a model with LoRA adapters "
                            "(resume with the learner.train it was written with)")
    mine = {n: p for n, p in model.net.named_parameters() if "lora_" in n}
    found = release.header(path)
    release.check_tensors(path, {n: tuple(p.shape) for n, p in mine.items()}, found,
                          "this model's LoRA adapters (learner.lora rank and targets as when it was saved)")
    tensors = load_file(str(path))
    with torch.no_grad():
        for n, p in mine.items():
            p.copy_(tensors[n].to(p.device, p.dtype))
    model.policy_version = int(release.read_settings(d).get("policy_version", 0))


def merged_state_dict(net, peft) -> dict[str, torch.Tensor]:
    """The network's tensors in ema.safetensors' names; LoRA adapters merged into their weights."""
    if peft is None:
        return net.state_dict()
    from peft.tuners.lora import LoraLayer

    sd = {k.replace(".base_layer.", "."): v for k, v in net.state_dict().items() if "lora_" not in k}
    for name, module in net.named_modules():
        if isinstance(module, LoraLayer):
            sd[f"{name}.weight"] = module.base_layer.weight + module.get_delta_weight("default")
    return sd
