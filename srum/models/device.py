"""Where a model computes: cpu, cuda[:i], or auto (a GPU where torch sees one; inside a Ray actor, the one
Ray gave it)."""

from __future__ import annotations

from ..io import InputError


class DeviceError(InputError):
    """A device that does not exist here."""


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but torch sees no CUDA device here")
    if device != "cpu" and not device.startswith("cuda"):
        raise DeviceError(f"device {device!r}: expected cpu, cuda, cuda:N or auto")
    return device
