"""Inputs as the official code prepares them: the ViT's image transform, patches, and text blocks."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .config import LATENT_PATCH_SIZE, VIT_MAX_PIXELS


def _divisible(value: float, stride: int) -> int:
    return max(stride, int(round(value / stride) * stride))


def _scaled(width: int, height: int, scale: float, stride: int) -> tuple[int, int]:
    return _divisible(round(width * scale), stride), _divisible(round(height * scale), stride)


def vit_size(width: int, height: int, max_size: int, min_size: int, stride: int,
             max_pixels: int = VIT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) the understanding transform resizes an image to: the long side at most max_size, the
    short side at least min_size, both multiples of the patch, and a pixel budget (data/transforms.py's
    MaxLongEdgeMinShortEdgeResize, including its area-ratio rescale)."""
    scale = min(max_size / max(width, height), 1.0)
    scale = max(scale, min_size / min(width, height))
    w, h = _scaled(width, height, scale, stride)
    if w * h > max_pixels:
        w, h = _scaled(w, h, max_pixels / (w * h), stride)
    if max(w, h) > max_size:
        w, h = _scaled(w, h, max_size / max(w, h), stride)
    return w, h


def vit_pixels(image: np.ndarray, max_size: int, min_size: int, patch: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H', W') in [-1, 1]: bicubic resize (PIL, antialiased, as torchvision does
    for PIL images), then mean 0.5 / std 0.5."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    size = vit_size(pil.width, pil.height, max_size, min_size, patch)
    pil = pil.resize(size, Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (x - 0.5) / 0.5


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C): patches row-major, each flattened as (kh, kw, c)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def latents_to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """Scaled VAE latents (B, z, 2h, 2w) -> generation tokens (B, h*w, 4z)."""
    return patchify(latents, LATENT_PATCH_SIZE)


def tokens_to_latents(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Generation tokens (B, rows*cols, 4z) -> scaled VAE latents (B, z, 2 rows, 2 cols)."""
    p = LATENT_PATCH_SIZE
    b, _, d = tokens.shape
    z = d // (p * p)
    x = tokens.reshape(b, rows, cols, p, p, z)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, z, rows * p, cols * p)


def text_blocks(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, L) and which are real (B, L) bool."""
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    valid = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        valid[i, : len(r)] = True
    return ids, valid
