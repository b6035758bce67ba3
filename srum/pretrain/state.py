"""Pretraining state on disk: a module's weights, optimiser and EMA with the step and time (safetensors), and the
learning-rate schedule both stages share."""


from __future__ import annotations

import math
from pathlib import Path

from ..io import (
    load_metadata,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
)


def cosine(step: int, total: int) -> float:
    """Cosine decay to 5 % of the peak."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def save_module(path: Path, net, opt, step: int, elapsed: float, meta: dict, ema=None, head=None) -> None:
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()} | optimizer_tensors(opt)
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    if head is not None:
        tensors |= {f"head.{k}": v for k, v in head.state_dict().items()}
    save_tensors(tensors, path, {"step": str(step), "elapsed_s": str(elapsed), **meta})


def resume_module(path: Path, net, opt, ema=None, head=None) -> tuple[int, float]:
    """(step, seconds so far) of a saved stage, its state loaded into net / opt / ema / head; (0, 0) if none."""
    if not path.exists():
        return 0, 0.0
    t, meta = load_tensors(path), load_metadata(path)
    net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    if head is not None:
        head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    load_optimizer(opt, t)
    return int(meta["step"]), float(meta["elapsed_s"])
